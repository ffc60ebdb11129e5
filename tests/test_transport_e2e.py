"""The one transport as the device runs it: `ias sim` boards (the firmware on the unix port, booted
from their own flash, wired by Device itself) polling a signed static channel that `ias publish`
wrote, served by tests/statichost.py over plain HTTP on loopback.

- the device's own wiring installs a release (`ias sim init --channel --update-key`, then
  `ias sim callhome`): the bug this replaces ended in `error dns` before any request; the next
  boot's poll confirms the trial by the signature (plain HTTP) and the one after costs a 304;
- a peer sending the bundle at one byte a second is cut within 30 s ("too_slow");
- a peer sending a steady 2 KB/s completes a 256 KiB bundle, every byte of it, hash checked."""

import hashlib
import json
import os
import time

import pytest
from statichost import StaticHost

from tools import cli, publish
from tools import keys as keys_mod

BLOB = 256 * 1024


def ias(*argv):
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    base = tmp_path_factory.mktemp("transport-keys")
    key_path, pub_path = keys_mod.write_pair(base, bits=2048)
    return keys_mod.load_private(key_path), pub_path


def release(tmp_path, key, files, version="1.1.0"):
    src = tmp_path / "src"
    for rel, data in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    out = tmp_path / "site"
    paths = publish.publish(src, key, "Blink", version, out, counter=1, poll=600)
    return out, paths


def board(tmp_path, pub, url):
    d = tmp_path / "dev"
    assert (
        ias(
            "sim",
            "init",
            d,
            "--channel",
            url,
            "--update-key",
            pub,
            "--app-name",
            "Blink",
            "--app-version",
            "1.0.0",
        )
        == 0
    )
    return d


def callhome(d, capsys):
    capsys.readouterr()
    code = ias("sim", "callhome", d, "--json")
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert lines, "no outcome printed"
    return code, json.loads(lines[-1])


def pointer(d, capsys):
    capsys.readouterr()
    assert ias("sim", "cat", d, "/app.json") == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


APP = {
    "app.py": b"VERSION = '1.1.0'\n\ndef start(api):\n    api.log('v1.1.0 up')\n",
    "lib/helper.py": b"def twice(x):\n    return 2 * x\n",
}


def test_device_wiring_installs_from_a_plain_http_channel(tmp_path, keys, capsys):
    key, pub = keys
    site, _ = release(tmp_path, key, APP)
    with StaticHost(site) as host:
        d = board(tmp_path, pub, host.url("/channel.json"))
        code, out = callhome(d, capsys)
        assert out["outcome"] == "updated", out
        assert out["app"] == {"name": "Blink", "version": "1.1.0"}
        assert out["trusted"] is True  # the signature verified, over plain http
        paths = [r["path"] for r in host.log]
        assert paths == ["/channel.json", "/channel.json.sig", "/Blink-1.1.0.tar"], paths
        assert host.log[0]["headers"]["host"] == "127.0.0.1:%d" % host.port
        ptr = pointer(d, capsys)
        assert ptr["name"] == "Blink" and ptr["version"] == "1.1.0" and ptr.get("trial"), ptr
        # the version on trial boots and its loop polls the channel: no conditional headers, a
        # signature that verifies (over plain http) confirms it, and the trial is committed
        del host.log[:]
        assert ias("sim", "boot", d, "--cycles", 30, "--quiet") == 0
        assert [r["path"] for r in host.log] == ["/channel.json", "/channel.json.sig"]
        assert "if-none-match" not in host.log[0]["headers"]
        ptr = pointer(d, capsys)
        assert ptr["version"] == "1.1.0" and "trial" not in ptr, ptr
        # committed: the next boot's poll is one conditional GET answered 304
        del host.log[:]
        assert ias("sim", "boot", d, "--cycles", 30, "--quiet") == 0
        assert [(r["path"], r["status"]) for r in host.log] == [("/channel.json", 304)]


def test_trickling_peer_cut_within_30_s(tmp_path, keys, capsys):
    key, pub = keys
    site, paths = release(tmp_path, key, dict(APP, **{"data/blob.bin": os.urandom(20000)}))
    with StaticHost(site) as host:
        host.pace("/" + paths["bundle"].name, 1, 1)  # one byte a second
        d = board(tmp_path, pub, host.url("/channel.json"))
        t0 = time.monotonic()
        code, out = callhome(d, capsys)
        elapsed = time.monotonic() - t0
    assert out["outcome"] == "error" and out["reason"] in ("too_slow", "timeout"), out
    assert out["reason"] == "too_slow", out  # every read succeeds: the rate is what cuts it
    assert elapsed < 30, elapsed
    assert code == 3
    ptr = pointer(d, capsys)
    assert ptr["version"] == "1.0.0" and not ptr.get("trial"), ptr  # nothing installed


def test_steady_2kb_per_s_completes_a_256_kib_bundle(tmp_path, keys, capsys):
    key, pub = keys
    blob = os.urandom(BLOB)  # incompressible: the bundle is at least 256 KiB
    site, paths = release(tmp_path, key, dict(APP, **{"data/blob.bin": blob}))
    bundle = paths["bundle"].read_bytes()
    assert len(bundle) >= BLOB
    name = "/" + paths["bundle"].name
    with StaticHost(site) as host:
        host.pace(name, 2048)
        d = board(tmp_path, pub, host.url("/channel.json"))
        t0 = time.monotonic()
        code, out = callhome(d, capsys)
        elapsed = time.monotonic() - t0
        sent = host.sent_bytes(name)
    assert out["outcome"] == "updated", out
    assert sent == len(bundle)  # all of it, once, at the peer's pace
    assert elapsed >= len(bundle) / 2048 - 2, elapsed
    # the installed copy of the 256 KiB file, read back from the board's flash
    ptr = pointer(d, capsys)
    assert ptr["version"] == "1.1.0", ptr
    capsys.readouterr()
    assert ias("sim", "ls", d, "/%s/data" % ptr["active"]) == 0
    listing = capsys.readouterr().out
    assert str(BLOB) in listing, listing
    want = json.loads((site / "channel.json").read_bytes())["sha256"]
    assert hashlib.sha256(bundle).hexdigest() == want  # the hash the device checked
