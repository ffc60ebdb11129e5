"""tools/anchorbundle.py on CPython, and the fixtures the MicroPython-side anchor tests use.

The MicroPython tests (tests/unix/test_anchors.py, test_powercut_anchors.py) cannot run
`cryptography`, so they call this file as a script: `python tests/test_anchorbundle.py
--fixtures DIR` builds update keys, CA chains (relative to now) and signed bundles into DIR.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402

from tools import anchorbundle, pkg_path, pki  # noqa: E402


def _rsa_pem():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_fixtures(out):
    """Keys, anchors and bundles for the device-side tests; returns the description dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    keys = {"a": _rsa_pem(), "b": _rsa_pem(), "c": _rsa_pem()}  # a: trusted, b: stranger
    for name, pem in keys.items():
        (out / (name + ".key")).write_bytes(pem)
        (out / (name + ".pub")).write_text(anchorbundle.public_pem(pem))
    (out / "keys").mkdir(exist_ok=True)
    (out / "keys" / "a.pub").write_text(anchorbundle.public_pem(keys["a"]))
    cas = {
        "old1": pki.make_ca("Old Root 1"),
        "old2": pki.make_ca("Old Root 2", org="Other family"),
        "new1": pki.make_ca("New Root 1"),
        "new2": pki.make_ca("New Root 2", org="Second family"),
        "soon": pki.make_ca("Short Root", not_after=200),
        "dead": pki.make_ca("Expired Root", not_before=-400, not_after=-10),
    }
    leaf = pki.make_leaf(cas["old1"], hosts=("ias.example",))
    pems = {k: v.pem.decode() for k, v in cas.items()}
    pems["leaf"] = leaf.pem.decode()
    for name, pem in pems.items():
        (out / (name + ".pem")).write_text(pem)
    year = now + 365 * 86400

    def bundle(folder, key, version, names, expires=year, hosts=()):
        doc = {
            "kind": "anchors",
            "version": version,
            "issued": anchorbundle.iso(now - 60),
            "expires": anchorbundle.iso(expires),
            "anchors": [pems[n] for n in names],
            "hosts": list(hosts),
        }
        raw = json.dumps(doc, separators=(",", ":")).encode()
        write_signed(out / folder, "anchors.json", raw, keys[key])

    # Bundles the tool itself writes (the path users take).
    anchorbundle.build_anchor_bundle(
        keys["a"],
        2,
        [pems["old1"], pems["new1"], pems["new2"]],
        year,
        ["ias.example"],
        out / "good2",
    )
    anchorbundle.build_anchor_bundle(keys["a"], 3, [pems["new2"]], year, (), out / "good3")
    anchorbundle.build_anchor_bundle(keys["c"], 4, [pems["new1"]], year, (), out / "byc4")
    anchorbundle.build_anchor_bundle(keys["b"], 2, [pems["new1"]], year, (), out / "otherkey")
    anchorbundle.build_anchor_bundle(keys["a"], 1, [pems["new1"]], year, (), out / "old1")
    # Hand-made ones the tool refuses to build.
    bundle("expired", "a", 5, ["new1"], expires=now - 86400)
    bundle("notca", "a", 5, ["new1", "leaf"])
    bundle("alldead", "a", 5, ["dead"])
    bundle("wronghost", "a", 5, ["new1"], hosts=["elsewhere.example"])
    bundle("soon", "a", 2, ["soon"])
    write_signed(out / "garbage", "anchors.json", b"\x00not json{{", keys["a"])
    (out / "garbage_unsigned").mkdir(exist_ok=True)
    (out / "garbage_unsigned" / "anchors.json").write_bytes(os.urandom(300))
    (out / "garbage_unsigned" / "anchors.json.sig").write_bytes(os.urandom(256))
    # Key rotation: keys.json naming key c, signed by a (accepted) and by b (refused).
    anchorbundle.build_key_doc(keys["a"], 1, [keys["c"]], now + 30 * 86400, out / "rot_a")
    anchorbundle.build_key_doc(keys["b"], 1, [keys["c"]], now + 30 * 86400, out / "rot_b")
    desc = {"now": now, "dir": str(out)}
    (out / "fixtures.json").write_text(json.dumps(desc))
    return desc


def write_signed(folder, name, raw, key_pem):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(raw)
    (folder / (name + ".sig")).write_bytes(anchorbundle.sign(key_pem, raw))


def _clean_stale(parent, prefix="ias-anchors-", age=3600):
    # The MicroPython side makes one folder a run; drop those older than an hour.
    for entry in Path(parent).glob(prefix + "*"):
        try:
            if time.time() - entry.stat().st_mtime > age:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


# -- CPython tests of the tool --------------------------------------------------------------------
def _verify(pub_pem, data, sig):
    pub = serialization.load_pem_public_key(pub_pem.encode())
    pub.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())


def test_build_anchor_bundle_signs_exact_bytes(tmp_path):
    key = _rsa_pem()
    ca1, ca2 = pki.make_ca("R1"), pki.make_ca("R2")
    j, s = anchorbundle.build_anchor_bundle(
        key, 7, [ca1.pem, ca2.der], "2031-01-01", ["iotappstory.com"], tmp_path
    )
    data = j.read_bytes()
    doc = json.loads(data)
    assert doc["version"] == 7
    assert doc["expires"] == "2031-01-01T00:00:00Z"
    assert doc["hosts"] == ["iotappstory.com"]
    assert [p.encode() for p in doc["anchors"]] == [ca1.pem, ca2.pem]  # DER came out as PEM
    _verify(anchorbundle.public_pem(key), data, s.read_bytes())
    assert len(s.read_bytes()) == 256


def test_refuses_leaf_empty_and_bad_version(tmp_path):
    key = _rsa_pem()
    ca = pki.make_ca("R")
    leaf = pki.make_leaf(ca)
    import pytest

    with pytest.raises(ValueError, match="not a CA"):
        anchorbundle.build_anchor_bundle(key, 1, [leaf.pem], out_dir=tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        anchorbundle.build_anchor_bundle(key, 1, [], out_dir=tmp_path)
    with pytest.raises(ValueError, match="version"):
        anchorbundle.build_anchor_bundle(key, 0, [ca.pem], out_dir=tmp_path)
    ec_key = pki.new_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="RSA"):
        anchorbundle.build_anchor_bundle(ec_key, 1, [ca.pem], out_dir=tmp_path)
    assert not (tmp_path / "anchors.json").exists()


def test_cli_run_writes_both_files(tmp_path):
    key = tmp_path / "update.key"
    key.write_bytes(_rsa_pem())
    ca = tmp_path / "root.pem"
    ca.write_bytes(pki.make_ca("R").pem + pki.make_ca("S").pem)  # two anchors in one file
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "anchorbundle.py"), "--key", str(key),
         "--version", "3", "--anchor", str(ca), "--host", "h.example", "--expires",
         "1900000000", "-o", str(out)],
        capture_output=True, text=True, cwd=str(REPO),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "anchors.json").read_bytes())
    assert doc["version"] == 3 and len(doc["anchors"]) == 2 and doc["hosts"] == ["h.example"]
    assert doc["expires"] == "2030-03-17T17:46:40Z"
    _verify(
        anchorbundle.public_pem(key.read_bytes()),
        (out / "anchors.json").read_bytes(),
        (out / "anchors.json.sig").read_bytes(),
    )


def test_ias_bundle_anchors_warns_when_the_set_drops_the_current_root(tmp_path, capsys):
    from tools import cli

    key = tmp_path / "update.key"
    key.write_bytes(_rsa_pem())
    old, new = pki.make_ca("Old Root"), pki.make_ca("New Root")
    for name, ca in (("old.pem", old), ("new.pem", new), ("renewed.pem", pki.renew(old))):
        (tmp_path / name).write_bytes(ca.pem)
    base = ["bundle", "anchors", "--key", str(key), "--current-root", str(tmp_path / "old.pem")]
    out = ["-o", str(tmp_path / "out")]
    assert cli.main(base + ["--version", "2", "--anchor", str(tmp_path / "new.pem")] + out) == 0
    err = capsys.readouterr().err
    assert (
        "warning: the set drops O=IAS test PKI,CN=Old Root," in err
        and "the server uses today" in err
    )
    assert (tmp_path / "out" / "anchors.json").exists()  # a warning, the set is still written
    for kept in (["old.pem", "new.pem"], ["renewed.pem", "new.pem"]):  # same name and key
        anchors = [a for k in kept for a in ("--anchor", str(tmp_path / k))]
        assert cli.main(base + ["--version", "3"] + anchors + out) == 0
        assert "warning" not in capsys.readouterr().err


def test_key_doc_signed_by_current_key(tmp_path):
    old, new = _rsa_pem(), _rsa_pem()
    j, s = anchorbundle.build_key_doc(old, 2, [new], 1900000000, tmp_path)
    doc = json.loads(j.read_bytes())
    assert doc["keys"] == [anchorbundle.public_pem(new)]
    assert "PRIVATE" not in j.read_text()
    _verify(anchorbundle.public_pem(old), j.read_bytes(), s.read_bytes())
    sig = base64.b64encode(s.read_bytes())
    assert len(sig) == 344


def test_fixtures_build(tmp_path):
    desc = make_fixtures(tmp_path)
    assert (tmp_path / "good2" / "anchors.json.sig").stat().st_size == 256
    assert abs(desc["now"] - time.time()) < 60


# -- the IAS incident end to end: real TLS, real plain HTTP, the real micropython binary -------
CLIENT = r"""
import sys, json, time
from ias import anchors, anchortx, certstore, net, state, transport
from ias.reason import ReasonError

class Board:
    clock_synced = True
    tls_verifies = True
    def time(self):
        return int(time.time())
    def ticks_ms(self):
        return time.ticks_ms()

class Device:
    pass

with open(sys.argv[1]) as f:
    p = json.load(f)
dev = Device()
dev.board = Board()
dev.settings = p["settings"]
dev.state = state.State(p["root"] + "/state.json")
dev.store = certstore.CertStore(p["root"] + "/cert")

def connect(host, port, timeout_ms, scheme="https"):
    if scheme == "http":
        return net.tcp_connect(host, port, timeout_ms)
    return certstore.connect(host, port, dev.store, dev.board, timeout_ms)

def call_home():
    try:
        s = connect("127.0.0.1", p["tls_port"], 5000)
    except ReasonError as e:
        return e.reason
    s.write(b"GET /ota/updates? HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = bytearray(80)
    n = s.readinto(buf)
    s.close()
    return bytes(buf[:n]).decode()

out = {"first": call_home()}
fetch = transport.Transport(dev.board, dev.store, dev.state).fetch  # the device's own
r = anchors.recover(dev, fetch, keys_dir=p["root"] + "/keys")
out["ladder"] = r["report"]
out["second"] = call_home()
out["after"] = anchortx.after_call_home(dev.state, dev.store, dev.board.time(), True)
out["names"] = dev.store.names()
out["version"] = dev.state.get("anchors_version")
print("RESULT " + json.dumps(out))
"""


def test_incident_recovered_over_plain_http(tmp_path):
    """The server's chain moves to a root the device does not trust; the ladder fetches the
    signed bundle over plain HTTP, installs it, and the same cycle's retry succeeds."""
    import functools
    import http.server
    import threading

    from mprunner import micropython_binary
    from tlspeer import TlsPeer

    key = _rsa_pem()
    old, new = pki.make_ca("Old IAS Root"), pki.make_ca("New Sectigo Root")
    leaf = pki.make_leaf(new, hosts=("127.0.0.1",))
    web = tmp_path / "web"
    anchorbundle.build_anchor_bundle(
        key, 2, [new.pem, old.pem], "2040-01-01", ["127.0.0.1"], web / "ota" / "anchors"
    )
    root = tmp_path / "dev"
    (root / "cert").mkdir(parents=True)
    (root / "keys").mkdir()
    (root / "cert" / "iasRootCa.cer").write_bytes(old.pem)
    (root / "keys" / "update.pub").write_text(anchorbundle.public_pem(key))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(web))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with TlsPeer(leaf, reply=b"HTTP/1.1 304 Not Modified\r\n\r\n") as peer:
            tls = "https://127.0.0.1:%d" % peer.port
            params = {
                "root": str(root),
                "tls_port": peer.port,
                "settings": {
                    "server": tls,
                    "recovery": [
                        tls + "/ota/anchors/",
                        "http://127.0.0.1:%d/ota/anchors/" % httpd.server_address[1],
                    ],
                },
            }
            (tmp_path / "p.json").write_text(json.dumps(params))
            (tmp_path / "client.py").write_text(CLIENT)
            proc = subprocess.run(
                [micropython_binary(), str(tmp_path / "client.py"), str(tmp_path / "p.json")],
                capture_output=True, text=True, timeout=60,
                env=dict(os.environ, MICROPYPATH=pkg_path()),
            )  # fmt: skip
    finally:
        httpd.shutdown()
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, proc.stdout + proc.stderr
    out = json.loads(lines[0][7:])
    assert out["first"] == "untrusted"
    assert out["ladder"][0].endswith("untrusted") and out["ladder"][1].endswith("installed v2")
    assert out["second"].startswith("HTTP/1.1 304")
    assert out["after"] == "confirmed" and out["version"] == 2
    assert len(out["names"]) == 2 and "iasRootCa.cer" in out["names"]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--fixtures":
        _clean_stale(Path(sys.argv[2]).parent)
        make_fixtures(sys.argv[2])
        sys.exit(0)
    sys.exit("usage: test_anchorbundle.py --fixtures DIR")
