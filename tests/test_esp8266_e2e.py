"""A virtual ESP8266 against `ias serve --esp8266`: its TLS cannot verify (axTLS), so only
signed bundles are installed, whatever the connection; the server speaks what axTLS speaks
(RSA key exchange, AES-CBC, records of at most 4 KiB)."""

import json

import pytest

from tests.esp8266_world import esp8266_board
from tools import bundle, demo, keys, sim

APP = demo.APP


@pytest.fixture
def esp8266(tmp_path):
    with esp8266_board(tmp_path) as (work, key_path, server, board):
        yield work, keys.load_private(key_path), server, board


def _publish_unsigned(work, version):
    folder = work / "artifacts" / APP
    data = bundle.build(demo._app_source(work, version), None, APP, version, 9, True)
    (folder / "unsigned.tar.gz").write_bytes(data)
    (folder / "current.json").write_text(
        json.dumps({"name": APP, "version": version, "file": "unsigned.tar.gz"})
    )


def test_signed_update_installs_and_commits_over_unverified_tls(esp8266):
    work, key, server, board = esp8266
    demo.publish(work, key, "1.1", 1)
    demo.boot(board, 3, quiet=True)
    ptr = demo.app_pointer(board)
    assert ptr["version"] == "1.1" and "trial" not in ptr
    ciphers = {r["cipher"] for r in server.requests if r.get("cipher")}
    # Static RSA key exchange with AES-CBC: all axTLS has (e.g. AES128-SHA256).
    assert ciphers and ciphers <= {"AES128-SHA256", "AES256-SHA256", "AES128-SHA", "AES256-SHA"}


def test_unsigned_bundle_is_refused_even_though_tls_connected(esp8266):
    work, key, server, board = esp8266
    demo.publish(work, key, "1.1", 1)
    demo.boot(board, 3, quiet=True)
    before = demo.app_pointer(board)
    _publish_unsigned(work, "6.6")
    res = sim.run_board(board, "callhome", echo=False).result
    assert (res["outcome"], res["reason"]) == ("error", "unsigned")
    assert demo.app_pointer(board) == before
