"""`ias keys new` and `ias bundle build` (CPython), and their bundles on the device side: the
real micropython binary verifies and installs what the tools produce."""

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from mprunner import micropython_binary

from tools import bundle, cli, keys, pkg_path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"


def run_tool(name, *args):
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / (name + ".py")), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=str(REPO),
    )


@pytest.fixture(scope="module")
def keydir(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    r = run_tool("keys", "new", d)
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture
def app(tmp_path):
    src = tmp_path / "app"
    (src / "lib").mkdir(parents=True)
    (src / "app.py").write_text("VERSION = '2'\n")
    (src / "lib" / "helper.py").write_text("X = 1\n")
    (src / "blob.bin").write_bytes(os.urandom(5000))
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    (src / ".hidden").write_text("no")
    return src


def members(data):
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return [(m.name, t.extractfile(m).read()) for m in t.getmembers()]


def test_keys_new_writes_a_private_pkcs8_and_a_public_spki(keydir):
    key_pem = (keydir / "update.key").read_bytes()
    pub_pem = (keydir / "update.pub").read_bytes()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert stat.S_IMODE((keydir / "update.key").stat().st_mode) == 0o600
    key = keys.load_private(keydir / "update.key")
    assert key.key_size == 3072
    pub = serialization.load_pem_public_key(pub_pem)
    assert pub.public_numbers() == key.public_key().public_numbers()
    again = run_tool("keys", "new", keydir)
    assert again.returncode != 0 and "exists" in again.stderr  # never overwritten silently


def test_keys_bits_and_force(tmp_path):
    assert cli.main(["keys", "new", str(tmp_path), "--bits", "2048"]) == 0
    first = (tmp_path / "update.pub").read_bytes()
    assert keys.load_private(tmp_path / "update.key").key_size == 2048
    assert cli.main(["keys", "new", str(tmp_path), "--bits", "2048", "--force"]) == 0
    assert (tmp_path / "update.pub").read_bytes() != first


def test_bundle_build_layout_manifest_and_signature(keydir, app, tmp_path):
    out = tmp_path / "b.tar"
    r = run_tool(
        "bundle",
        "build",
        app,
        "--key",
        keydir / "update.key",
        "--name",
        "blink",
        "--version",
        "2.0",
        "--counter",
        "7",
        "-o",
        out,
    )
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert len(data) % 512 == 0 and len(data) < 10240 + 5000  # no 10 KiB record padding
    got = members(data)
    names = [n for n, _ in got]
    assert names == ["manifest.json", "manifest.sig", "app.py", "blob.bin", "lib/helper.py"]
    man_raw, sig = got[0][1], got[1][1]
    man = json.loads(man_raw)
    assert (man["name"], man["version"], man["counter"], man["format"]) == ("blink", "2.0", 7, 1)
    files = {f["path"]: f for f in man["files"]}
    for name, body in got[2:]:
        assert files[name]["size"] == len(body)
        assert files[name]["sha256"] == hashlib.sha256(body).hexdigest()
    assert man["space"] >= sum(f["size"] for f in man["files"])
    pub = serialization.load_pem_public_key((keydir / "update.pub").read_bytes())
    pub.verify(sig, man_raw, padding.PKCS1v15(), hashes.SHA256())  # raises if wrong
    assert str(out) in r.stdout and hashlib.md5(data).hexdigest() in r.stdout


def test_builds_are_reproducible_and_gzip_works(keydir, app):
    key = keys.load_private(keydir / "update.key")
    a = bundle.build(app, key, "blink", "2.0")
    b = bundle.build(app, key, "blink", "2.0")
    assert a == b
    gz = bundle.build(app, key, "blink", "2.0", compress=True)
    assert gz[:2] == b"\x1f\x8b" and members(gz) == members(a)
    unsigned = bundle.build(app, None, "blink", "2.0")
    assert [n for n, _ in members(unsigned)][:2] == ["manifest.json", "app.py"]


def test_build_refuses_what_the_device_would(keydir, app, tmp_path):
    key = keys.load_private(keydir / "update.key")
    with pytest.raises(ValueError, match="version"):
        bundle.build(app, key, "blink", "1.2.3.4.5.6.7")
    with pytest.raises(ValueError, match="name"):
        bundle.build(app, key, "", "1")
    with pytest.raises(ValueError, match="counter"):
        bundle.build(app, key, "blink", "1", counter=-1)
    (app / "bad name.py").write_text("x")
    with pytest.raises(ValueError, match="bad name"):
        bundle.build(app, key, "blink", "1")
    (app / "bad name.py").unlink()
    (app / "link.py").symlink_to(app / "app.py")
    with pytest.raises(ValueError, match="link"):
        bundle.build(app, key, "blink", "1")
    (app / "link.py").unlink()
    with pytest.raises(NotADirectoryError):
        bundle.build(tmp_path / "nope", key, "blink", "1")
    r = run_tool("bundle", "build", app, "--name", "x", "--version", "1", "-o", tmp_path / "o")
    assert r.returncode != 0 and "--key" in r.stderr


def test_cli_lists_bundle_and_keys():
    parser = cli.build_parser()
    help_text = parser.format_help()
    assert "bundle" in help_text and "keys" in help_text
    args = parser.parse_args(
        ["bundle", "build", "d", "--key", "k", "--name", "n", "--version", "1", "-o", "o"]
    )
    assert args.func is bundle.cmd_build


DEVICE_SCRIPT = r"""
import sys, os, hashlib, binascii
from ias import formats, slots as slots_mod, state, trial, trust
from ias.tarstream import TarReader
folder, root = sys.argv[1], sys.argv[2]
keys = trust.load_keys(folder)
print("KEYS", [(k.name, k.bits) for k in keys])

class Board:
    tls_verifies = False
    has_firmware_ota = False
    deflate_wbits = 10  # the ESP8266's budget: `--gzip` bundles fit it
    clock_synced = True
    def time(self): return 1800000000
    def feed_watchdog(self): pass
    def reset_cause(self): return "intended"
    def uptime_ms(self): return 1000

for name in sys.argv[3:]:
    path = folder + "/" + name
    slots = slots_mod.Slots(root)
    st = state.State(root + "/state.json")
    board = Board()
    data = open(path, "rb").read()
    inst = formats.installer_for(data[:512], board, {}, st, slots, keys, False)
    inst.begin(len(data), "", "")
    for i in range(0, len(data), 999):
        inst.write(memoryview(data)[i:i + 999])
    md5 = binascii.hexlify(hashlib.md5(data).digest()).decode()
    inst.finish(md5, hashlib.sha256(data).digest())
    inst.activate()
    assert trial.boot_check(board, st, slots) == "trial"
    art = trial.commit(board, st, slots)
    print("INSTALLED", name, art["name"], art["version"], art["counter"], inst.signed_by,
          sorted(os.listdir(slots.active_app_dir())))
"""


def run_device(folder, root, *names):
    script = folder / "device_check.py"
    script.write_text(DEVICE_SCRIPT)
    env = dict(os.environ, MICROPYPATH="%s:.frozen" % pkg_path())
    return subprocess.run(
        [micropython_binary(), str(script), str(folder), str(root), *names],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_tool_bundles_verify_and_install_on_micropython(app, tmp_path):
    folder = tmp_path / "dev"
    folder.mkdir()
    assert cli.main(["keys", "new", str(folder), "--bits", "2048"]) == 0
    (folder / "update.key").rename(tmp_path / "update.key")  # the device holds the public key
    build = ["bundle", "build", str(app), "--key", str(tmp_path / "update.key"), "--name", "blink"]
    assert cli.main(build + ["--version", "1.0", "--counter", "1", "-o", str(folder / "a")]) == 0
    assert (
        cli.main(build + ["--version", "2.0", "--counter", "2", "--gzip", "-o", str(folder / "b")])
        == 0
    )
    root = tmp_path / "root"
    root.mkdir()
    r = run_device(folder, root, "a", "b")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "KEYS [('update', 2048)]" in r.stdout
    assert "INSTALLED a blink 1.0 1 update ['app.py', 'blob.bin', 'lib']" in r.stdout
    assert "INSTALLED b blink 2.0 2 update" in r.stdout
    assert (root / "slot_a" / "blob.bin").read_bytes() == (app / "blob.bin").read_bytes()
    # a bundle signed by a key the device does not hold is refused there
    other = tmp_path / "other"
    assert cli.main(["keys", "new", str(other), "--bits", "2048"]) == 0
    (folder / "c").write_bytes(
        bundle.build(app, keys.load_private(other / "update.key"), "blink", "3.0", counter=3)
    )
    r = run_device(folder, root, "c")
    assert r.returncode != 0 and "ReasonError: bad_signature" in r.stdout + r.stderr


def test_firmware_trust_module_runs_on_cpython_too(keydir):
    sys.path.insert(0, pkg_path())
    try:
        from ias import trust
    finally:
        sys.path.remove(pkg_path())
    key = keys.load_private(keydir / "update.key")
    pub = trust.key_from_pem((keydir / "update.pub").read_text(), "update")
    assert pub.bits == 3072 and pub.n == key.public_key().public_numbers().n
    msg = b"anchor bundle v7"
    sig = bundle.sign(key, msg)
    assert trust.verify(msg, sig, [pub]) == "update"
    assert trust.verify(msg + b".", sig, [pub]) is None
