"""The static channel end to end: the firmware (channel, appbundle, certstore, httpclient) in the
MicroPython unix port polls a tree written by tools/publish.py and served by tests/statichost.py
on loopback, over TLS (a tools/pki.py chain whose root is the device's only anchor) and over
plain HTTP. Each poll is one micropython process, as after a reset: everything it keeps between
polls is on its "flash" (a folder holding keys/, cert/, staging/, slots, app.json, state.json)."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from mprunner import micropython_binary
from statichost import StaticHost

from tools import deploy, pkg_path, pki, publish
from tools import keys as keys_mod

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"

DEVICE = r"""
import sys, json, time
from ias import channel, formats, slots, state, certstore, transport

class Board:
    tls_verifies = True
    clock_synced = True
    chip = "esp32"
    def time(self):
        return int(time.time())
    def ticks_ms(self):
        return time.ticks_ms()
    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)
    def feed_watchdog(self):
        pass
    def running_partition(self):
        return None

class Device:
    pass

with open(sys.argv[1]) as f:
    p = json.load(f)
root = p["root"]
dev = Device()
dev.board = Board()
dev.settings = p["settings"]
dev.state = state.State(root + "/state.json")
dev.store = certstore.CertStore(root + "/cert")
dev.slots = slots.Slots(root)
dev.transport = transport.Transport(dev.board, dev.store, dev.state)  # the device's one
stats = {}

def make(first, trusted):
    return formats.installer_for(first, dev.board, dev.settings, dev.state, dev.slots, None,
                                 trusted)

out = channel.poll(dev, make, force=p.get("force", False), folder=root + "/staging",
                   keys_dir=root + "/keys", stats=stats)
inst = out.pop("installer", None)
if inst is not None:
    inst.activate()  # what device.apply() does before its reset
f = stats.pop("transport", None)
out["requests"] = f.requests if f is not None else 0
out["stats"] = stats
print("RESULT " + json.dumps(out))
"""

HEAP = "192k"  # imports of the .mpy firmware + mbedTLS on the GC heap pass at 176k
APP_V1 = {"app.py": b"VERSION = '1.0.0'\n"}
APP_V2 = {
    "app.py": b"VERSION = '1.1.0'\n\ndef start(api):\n    api.log('hello')\n",
    "lib/helper.py": b"def twice(x):\n    return 2 * x\n",
    # incompressible, so a cut download has something to resume
    "data/blob.bin": bytes((i * 2654435761 >> 13) & 0xFF for i in range(60000)),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("channel")
    key_path, pub_path = keys_mod.write_pair(base / "keys", bits=2048)
    ca = pki.make_ca("Channel Test Root")
    inter = pki.make_ca("Channel Test CA", issuer=ca)
    leaf = pki.make_leaf(inter)
    script = base / "device.py"
    script.write_text(DEVICE)
    build = base / "build"
    deploy.compile_firmware(str(build))  # the device runs .mpy, as on hardware
    return {
        "lib": build / "lib",
        "base": base,
        "key": keys_mod.load_private(key_path),
        "pub": pub_path.read_bytes(),
        "root_ca": ca,
        "tls": (leaf, [inter]),
        "script": script,
    }


def write_app(folder, files):
    for rel, data in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return folder


def site(world, tmp_path, name="site", version="1.1.0", counter=1, files=APP_V2, **kw):
    src = write_app(tmp_path / ("src-" + name + version), files)
    out = tmp_path / name
    publish.publish(src, world["key"], "Blink", version, out, counter=counter, poll=600, **kw)
    return out


def flash(world, tmp_path, version="1.0.0"):
    """A device's flash folder: its key, the test root as its only anchor, app v1 in slot_a."""
    root = tmp_path / "flash"
    (root / "keys").mkdir(parents=True)
    (root / "keys" / "update.pub").write_bytes(world["pub"])
    (root / "cert").mkdir()
    (root / "cert" / "testRoot.cer").write_bytes(world["root_ca"].pem)
    (root / "staging").mkdir()
    write_app(root / "slot_a", APP_V1)
    pointer = {"active": "slot_a", "kind": "bundle", "name": "Blink", "version": version}
    (root / "app.json").write_text(json.dumps(pointer))
    return root


def poll(world, root, url, version="1.0.0", force=False, timeout=60, heap=None):
    params = {
        "root": str(root),
        "force": force,
        "settings": {"channel": url, "app_name": "Blink", "app_version": version},
    }
    fd, param_file = tempfile.mkstemp(suffix=".json", dir=world["script"].parent)
    with os.fdopen(fd, "w") as f:
        json.dump(params, f)
    env = dict(os.environ, MICROPYPATH=str(world.get("lib", pkg_path())))
    heap_args = ["-X", "heapsize=" + heap] if heap else []
    proc = subprocess.run(
        [micropython_binary()] + heap_args + [str(world["script"]), param_file],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise AssertionError(
        "no result (exit %s):\n%s%s" % (proc.returncode, proc.stdout, proc.stderr)
    )


def snapshot(root):
    """{relative path: bytes} of every file on the device's flash."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def assert_installed(root, files=APP_V2):
    pointer = json.loads((root / "app.json").read_text())
    assert pointer["active"] == "slot_b" and pointer["version"] == "1.1.0"
    assert pointer["trial"]["kind"] == "bundle"  # the new version must now prove itself
    for rel, data in files.items():
        assert (root / "slot_b" / rel).read_bytes() == data
    assert (root / "slot_a" / "app.py").read_bytes() == APP_V1["app.py"]
    assert sorted(os.listdir(root / "staging")) == []  # the partial file is gone


def test_release_installed_over_tls(world, tmp_path):
    tree = site(world, tmp_path)
    root = flash(world, tmp_path)
    with StaticHost(tree, tls=world["tls"]) as host:
        # a bounded heap: one buffer, a 4 KiB document, no whole download in RAM
        out = poll(world, root, host.url("/channel.json"), heap=HEAP)
        assert out["outcome"] == "updated", out
        assert out["app"] == {"name": "Blink", "version": "1.1.0"} and out["poll"] == 600
        assert [r["path"] for r in host.log] == [
            "/channel.json",
            "/channel.json.sig",
            "/Blink-1.1.0.tar",
        ]
    assert_installed(root)


def test_untrusted_tls_host_changes_nothing(world, tmp_path):
    tree = site(world, tmp_path)
    root = flash(world, tmp_path)
    other = pki.make_ca("Somebody Else")
    before = snapshot(root)
    with StaticHost(tree, tls=(pki.make_leaf(other), [])) as host:
        out = poll(world, root, host.url("/channel.json"))
    assert out["outcome"] == "error" and out["reason"] == "untrusted", out
    assert snapshot(root) == before


def test_plain_http_unchanged_channel_costs_one_304(world, tmp_path):
    tree = site(world, tmp_path)
    root = flash(world, tmp_path, version="1.1.0")
    with StaticHost(tree) as host:
        url = host.url("/channel.json")
        out = poll(world, root, url, version="1.1.0")
        assert out["outcome"] == "up-to-date" and out["status"] == 200, out
        memo = json.loads((root / "state.json").read_text())["channel"]
        assert memo["etag"] and memo["modified"]
        before = snapshot(root)
        mtime = (root / "state.json").stat().st_mtime_ns
        host.log.clear()
        out = poll(world, root, url, version="1.1.0")
        assert out["outcome"] == "up-to-date" and out["status"] == 304, out
        assert len(host.log) == 1 and host.log[0]["status"] == 304
        assert host.log[0]["headers"]["if-none-match"] == memo["etag"]
        assert host.log[0]["headers"]["if-modified-since"] == memo["modified"]
        assert host.sent_bytes() == 0
    assert snapshot(root) == before and (root / "state.json").stat().st_mtime_ns == mtime


def test_redirect_to_another_host(world, tmp_path):
    # the front host (TLS) sends everything to a second host on another port (plain HTTP):
    # allowed because channel.json, its .sig and the bundle are all signed content
    tree = site(world, tmp_path)
    root = flash(world, tmp_path)
    with StaticHost(tree) as back, StaticHost(tmp_path, tls=world["tls"]) as front:
        front.redirect("/latest/channel.json", back.url("/channel.json"))
        front.redirect("/latest/channel.json.sig", back.url("/channel.json.sig"), 301)
        front.redirect("/latest/Blink-1.1.0.tar", back.url("/Blink-1.1.0.tar"), 307)
        out = poll(world, root, front.url("/latest/channel.json"))
        assert out["outcome"] == "updated", out
        assert [r["status"] for r in front.log] == [302, 301, 307]
        assert [r["status"] for r in back.log] == [200, 200, 200]
        assert back.log[0]["headers"]["host"] == "127.0.0.1:%d" % back.port
    assert_installed(root)


def test_cut_download_resumes_with_range(world, tmp_path):
    tree = site(world, tmp_path)
    root = flash(world, tmp_path)
    path = "/Blink-1.1.0.tar"
    size = (tree / path[1:]).stat().st_size
    cuts = (3000, 9000, 1, 20000)
    with StaticHost(tree, tls=world["tls"]) as host:
        host.cut(path, *cuts)
        url = host.url("/channel.json")
        offset = 0
        for n in cuts:
            out = poll(world, root, url)
            assert out["outcome"] == "error" and out["reason"] == "closed", out
            assert out["stats"]["resumed_from"] == offset
            offset += n
            assert (root / "staging" / "channel.part").stat().st_size == offset
        out = poll(world, root, url)
        assert out["outcome"] == "updated", out
        assert out["stats"]["resumed_from"] == offset and out["stats"]["status"] == 206
        ranges = [r["headers"].get("range") for r in host.requests_for(path)]
        assert ranges == [None, "bytes=3000-", "bytes=12000-", "bytes=12001-", "bytes=32001-"]
        assert [r["status"] for r in host.requests_for(path)] == [200, 206, 206, 206, 206]
        assert host.sent_bytes(path) == size  # not one byte fetched twice
    assert_installed(root)


def test_server_ignoring_range_restarts_from_zero(world, tmp_path):
    tree = site(world, tmp_path)
    root = flash(world, tmp_path)
    path = "/Blink-1.1.0.tar"
    size = (tree / path[1:]).stat().st_size
    with StaticHost(tree) as host:
        host.ignore_range = True
        host.cut(path, 25000)
        url = host.url("/channel.json")
        assert poll(world, root, url)["reason"] == "closed"
        out = poll(world, root, url)
        assert out["outcome"] == "updated", out
        assert out["stats"]["resumed_from"] == 25000 and out["stats"]["status"] == 200
        assert host.requests_for(path)[1]["headers"]["range"] == "bytes=25000-"
        assert host.sent_bytes(path) == 25000 + size
    assert_installed(root)


def test_bad_signature_changes_nothing(world, tmp_path):
    tree = site(world, tmp_path)
    sig = bytearray((tree / "channel.json.sig").read_bytes())
    sig[-1] ^= 0x01
    (tree / "channel.json.sig").write_bytes(bytes(sig))
    root = flash(world, tmp_path)
    before = snapshot(root)
    with StaticHost(tree) as host:
        out = poll(world, root, host.url("/channel.json"))
        assert out["outcome"] == "error" and out["reason"] == "bad_signature", out
        assert [r["path"] for r in host.log] == ["/channel.json", "/channel.json.sig"]
    assert snapshot(root) == before


def test_lower_counter_changes_nothing(world, tmp_path):
    tree = site(world, tmp_path, counter=2)
    root = flash(world, tmp_path)
    (root / "state.json").write_text(json.dumps({"counters": {"app": 3}}))
    with StaticHost(tree) as host:
        before = snapshot(root)
        out = poll(world, root, host.url("/channel.json"), force=True)
        assert out["outcome"] == "no-update" and "counter" in out["reason"], out
        assert not host.requests_for("/Blink-1.1.0.tar")
    after = snapshot(root)
    # the refusal is remembered with the channel's validators; nothing else moved
    after_state = json.loads(after.pop("state.json"))
    before_state = json.loads(before.pop("state.json"))
    assert after_state["counters"] == before_state["counters"]
    assert after == before


def test_differing_bundle_hash_changes_nothing(world, tmp_path):
    tree = site(world, tmp_path)
    # the host now carries another (validly signed!) bundle than channel.json names
    other = site(world, tmp_path, name="other", files=dict(APP_V2, **{"app.py": b"X = 1\n"}))
    shutil.copyfile(other / "Blink-1.1.0.tar", tree / "Blink-1.1.0.tar")
    root = flash(world, tmp_path)
    before = snapshot(root)
    with StaticHost(tree) as host:
        out = poll(world, root, host.url("/channel.json"))
        assert out["outcome"] == "error" and out["reason"] == "hash_mismatch", out
    assert snapshot(root) == before


def test_publish_cli_tree(world, tmp_path):
    src = write_app(tmp_path / "src", APP_V2)
    key = world["base"] / "keys" / "update.key"
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    (anchors / "anchors.json").write_bytes(b"{}")
    (anchors / "anchors.json.sig").write_bytes(b"sig")
    out = tmp_path / "out"
    rc = subprocess.run(
        [
            str(Path(os.sys.executable)),
            str(REPO / "tools" / "publish.py"),
            str(src),
            "--key",
            str(key),
            "--name",
            "Blink",
            "--version",
            "1.1.0",
            "--counter",
            "4",
            "--base-url",
            "https://cdn.example.com/blink/",
            "--anchors",
            str(anchors),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert rc.returncode == 0, rc.stderr
    doc = json.loads((out / "channel.json").read_bytes())
    assert doc["bundle"] == "https://cdn.example.com/blink/Blink-1.1.0.tar"
    assert doc["anchors"] == "https://cdn.example.com/blink/anchors.json"
    assert doc["counter"] == 4 and doc["size"] == (out / "Blink-1.1.0.tar").stat().st_size
    assert sorted(p.name for p in out.iterdir()) == [
        "Blink-1.1.0.tar",
        "anchors.json",
        "anchors.json.sig",
        "channel.json",
        "channel.json.sig",
    ]
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    world["key"].public_key().verify(
        (out / "channel.json.sig").read_bytes(),
        (out / "channel.json").read_bytes(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
