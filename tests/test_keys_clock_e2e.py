"""Design §1 rule 7, end to end: an NTP answer ten years ahead does not retire rotated-away
update keys. A virtual ESP8266 (its TLS cannot verify: nothing else there checks the clock)
meets a release signed by the operator's new key while NTP answers ten years ahead. It fetches
the operator's keys.json from its recovery location, takes the new key and installs the
release; the old key stays until authenticated time (the time floor) passes the transition,
however far ahead the board's clock is. (Before, the lie retired the old key at once.)"""

import contextlib
import datetime as dt
import json
import time

import pytest

from tools import cli, demo, keys, pki, sim
from tools.server import UpdateServer

APP = demo.APP
YEAR = 365 * 86400


@contextlib.contextmanager
def esp8266_board(tmp_path):
    """(work folder, update key path, running `ias serve --esp8266`, virtual ESP8266)."""
    key_path, pub_path = keys.write_pair(tmp_path / "keys", bits=2048)
    root = pki.make_ca("Root R", kind="rsa")
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    server = UpdateServer(artifacts=tmp_path / "artifacts", anchors=anchors, esp8266=True)
    server.use_chain(pki.make_leaf(root, kind="rsa"))
    server.start()
    board = tmp_path / "esp8266"
    sim.init(
        sim.args_for(
            "init",
            board,
            chip="esp8266",
            server=server.url,
            app_name=APP,
            update_key=str(pub_path),
            recovery=[server.url + "/ota/anchors/"],
            force=True,
        )
    )
    try:
        yield tmp_path, key_path, server, board
    finally:
        server.stop()


@pytest.fixture
def esp8266(tmp_path):
    with esp8266_board(tmp_path) as b:
        yield b


def _set_ntp(board, answer):
    path = board / "board.json"
    hw = json.loads(path.read_text())
    hw["ntp"] = answer
    path.write_text(json.dumps(hw))


def _keys_on_board(board):
    run = sim.run_board(board, "ls", "/keys", echo=False)
    assert run.code == 0, run.output
    return sorted(line.split()[0] for line in run.output.splitlines() if line.strip())


def rotation_with_the_clock_ten_years_ahead(esp8266):
    work, key_path, server, board = esp8266
    # the operator rotates with the CLI: a new key, keys.json signed by the old one, 30 days of
    # transition; the next release is signed by the new key only
    fresh = work / "newkeys"
    assert cli.main(["keys", "new", str(fresh), "--bits", "2048"]) == 0
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rotate = ["keys", "rotate", "--key", str(key_path), "--new", str(fresh / "update.pub")]
    assert (
        cli.main(rotate + ["--version", "1", "--until", until, "-o", str(work / "anchors")]) == 0
    )
    demo.publish(work, keys.load_private(fresh / "update.key"), "1.1", 1)

    _set_ntp(board, int(time.time()) + 10 * YEAR)  # every boot hears the lie
    demo.boot(board, 3, quiet=True)
    log = (board / "console.log").read_text(errors="replace")
    ptr = demo.app_pointer(board)
    assert ptr["version"] == "1.1" and "trial" not in ptr, log[-3000:]
    assert "update keys v1 accepted" in log
    assert "retired update keys" not in log, log[-3000:]
    assert _keys_on_board(board) == ["k1-0.pub", "update.pub"], log[-3000:]
    state = demo.device_state(board)
    assert state["keys_doc"]["names"] == ["k1-0.pub"]
    assert state.get("time_floor", 0) < time.time() + 86400  # the lie never became the floor


# The scenario is also an attack case of the reliability ledger (tests/reliability).
def test_ntp_ten_years_ahead_does_not_retire_the_old_update_key(esp8266):
    rotation_with_the_clock_ten_years_ahead(esp8266)
