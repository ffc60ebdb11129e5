"""Real TLS on loopback: a CPython ssl server (tests/tlspeer.py) with chains from tools/pki.py,
and the firmware's certstore.connect() running in the MicroPython unix port as the client.
Dates are relative to now; `faketime` moves the client's clock (and mbedTLS's with it)."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import tlspeer
from mprunner import micropython_binary
from tlspeer import TlsPeer

from tools import pkg_path, pki

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"

# The client: a tiny board and the real store; prints one RESULT line.
CLIENT = r"""
import sys, json, time
from ias import certstore, net
from ias.reason import ReasonError

class Board:
    def __init__(self, p):
        self.clock_synced = p.get("synced", True)
        self.tls_verifies = p.get("verifies", True)
        self.fixed = p.get("time")
    def time(self):
        return self.fixed if self.fixed is not None else int(time.time())

with open(sys.argv[1]) as f:  # a file: this build crashes on long argv strings
    p = json.load(f)
board = Board(p)
store = certstore.CertStore(p["root"])
out = {}
try:
    for name, pem in p.get("add", []):
        store.add(name, pem, board.time())
    if p.get("host"):
        s = certstore.connect(p["host"], p["port"], store, board, p.get("timeout_ms", 5000))
        if p.get("read_timeout"):
            s.settimeout(p["read_timeout"])
        s.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = bytearray(64)
        n = s.readinto(buf)
        out = {"ok": True, "verified": s.verified, "reply": bytes(buf[:n]).decode()}
        s.close()
    else:
        out = {"ok": True}
except ReasonError as e:
    out = {"ok": False, "reason": e.reason, "detail": e.detail}
except ReasonError as e:
    out = {"ok": False, "cert_reason": e.reason, "detail": e.detail}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def client_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("client") / "client.py"
    path.write_text(CLIENT)
    return path


def run_client(script, params, faketime=None, timeout=30):
    fd, param_file = tempfile.mkstemp(suffix=".json", dir=script.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(params, f)
    cmd = [micropython_binary(), str(script), param_file]
    if faketime:
        if not shutil.which("faketime"):
            pytest.fail("faketime is not installed (Debian package faketime)")
        cmd = ["faketime", "-f", faketime] + cmd  # libfaketime spec, e.g. "+60d"
    env = dict(os.environ, MICROPYPATH=pkg_path())
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise AssertionError(
        "no result (exit %s):\n%s%s" % (proc.returncode, proc.stdout, proc.stderr)
    )


def write_anchor(root, name, issued):
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(issued.pem)


@pytest.fixture(scope="module")
def pkix():
    """One chain reused by most cases: root -> intermediate -> leaf for 127.0.0.1/localhost."""
    root = pki.make_ca("Test Root A")
    inter = pki.make_ca("Test Issuing CA", issuer=root)
    leaf = pki.make_leaf(inter)
    other = pki.make_ca("Unrelated Root")
    return {"root": root, "inter": inter, "leaf": leaf, "other": other}


def connect_case(
    script,
    tmp_path,
    anchors,
    leaf,
    chain,
    host="127.0.0.1",
    faketime=None,
    reply=tlspeer.DEFAULT_REPLY,
    **extra,
):
    root = tmp_path / "cert"
    for name, issued in anchors:
        write_anchor(root, name, issued)
    with TlsPeer(leaf, chain, reply=reply) as peer:
        params = dict(root=str(root), host=host, port=peer.port)
        params.update(extra)
        return run_client(script, params, faketime=faketime), peer


def test_right_root_ok(client_script, tmp_path, pkix):
    out, peer = connect_case(
        client_script, tmp_path, [("iasRootCa.cer", pkix["root"])], pkix["leaf"], [pkix["inter"]]
    )
    assert out == {
        "ok": True,
        "verified": True,
        "reply": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    }
    assert peer.requests and peer.requests[0].startswith(b"GET / HTTP/1.1\r\n")
    assert peer.sni == ["127.0.0.1"]


def test_host_name_localhost_ok(client_script, tmp_path, pkix):
    try:
        infos = socket.getaddrinfo("localhost", 1, 0, socket.SOCK_STREAM)
    except OSError:
        pytest.skip("localhost does not resolve here")
    if infos[0][0] != socket.AF_INET:
        pytest.skip("localhost resolves to IPv6 first; the peer listens on IPv4")
    out, peer = connect_case(
        client_script,
        tmp_path,
        [("iasRootCa.cer", pkix["root"])],
        pkix["leaf"],
        [pkix["inter"]],
        host="localhost",
    )
    assert out["ok"] and out["verified"], out
    assert peer.sni == ["localhost"]


def test_wrong_root_untrusted(client_script, tmp_path, pkix):
    out, peer = connect_case(
        client_script, tmp_path, [("iasRootCa.cer", pkix["other"])], pkix["leaf"], [pkix["inter"]]
    )
    assert out["ok"] is False and out["reason"] == "untrusted", out
    assert peer.requests == []


def test_root_expired_since_install(client_script, tmp_path):
    root = pki.make_ca("Short Root", not_after=30)
    leaf = pki.make_leaf(root, not_after=200)
    store = tmp_path / "cert"
    # Installed today through the store (it refuses expired anchors, so it must be valid now).
    added = run_client(
        client_script, {"root": str(store), "add": [["iasRootCa.cer", root.pem.decode()]]}
    )
    assert added == {"ok": True}
    with TlsPeer(leaf) as peer:
        params = {"root": str(store), "host": "127.0.0.1", "port": peer.port}
        today = run_client(client_script, params)
        later = run_client(client_script, params, faketime="+60d")
    assert today["ok"] and today["verified"], today
    assert later["ok"] is False and later["reason"] == "expired", later


def test_leaf_not_yet_valid(client_script, tmp_path, pkix):
    leaf = pki.make_leaf(pkix["inter"], not_before=2, not_after=90)
    out, _ = connect_case(
        client_script, tmp_path, [("iasRootCa.cer", pkix["root"])], leaf, [pkix["inter"]]
    )
    assert out["ok"] is False and out["reason"] == "not_yet_valid", out


def test_wrong_host_name(client_script, tmp_path, pkix):
    leaf = pki.make_leaf(pkix["inter"], hosts=("other.example",))
    out, _ = connect_case(
        client_script, tmp_path, [("iasRootCa.cer", pkix["root"])], leaf, [pkix["inter"]]
    )
    assert out["ok"] is False and out["reason"] == "name_mismatch", out


def test_server_omits_intermediate(client_script, tmp_path, pkix):
    out, _ = connect_case(
        client_script, tmp_path, [("iasRootCa.cer", pkix["root"])], pkix["leaf"], []
    )
    assert out["ok"] is False and out["reason"] == "untrusted", out


@pytest.mark.parametrize("order", ["old_first", "new_first"])
def test_renewed_root_beside_expired_one(client_script, tmp_path, order):
    old = pki.make_ca("Rotating Root", not_before=-400, not_after=-1)
    new = pki.renew(old)
    leaf = pki.make_leaf(new)  # same subject and key: either certificate can be the parent
    names = ("a.cer", "b.cer") if order == "old_first" else ("b.cer", "a.cer")
    out, _ = connect_case(client_script, tmp_path, [(names[0], old), (names[1], new)], leaf, [])
    assert out["ok"] and out["verified"], out
    # And the expired one alone says so.
    alone, _ = connect_case(client_script, tmp_path / "alone", [("a.cer", old)], leaf, [])
    assert alone["ok"] is False and alone["reason"] == "expired", alone


def test_several_anchors_only_last_matches(client_script, tmp_path, pkix):
    anchors = [(p.name, p) for p in sorted((FIRMWARE / "cert").glob("*.cer"))]
    root = tmp_path / "cert"
    root.mkdir()
    for name, path in anchors:
        shutil.copy(path, root / name)
    out, _ = connect_case(
        client_script, tmp_path, [("zzTestRoot.cer", pkix["root"])], pkix["leaf"], [pkix["inter"]]
    )
    assert len(list(root.glob("*.cer"))) == len(anchors) + 1 >= 6
    assert out["ok"] and out["verified"], out


def test_unparsable_anchor_file_is_skipped(client_script, tmp_path, pkix):
    root = tmp_path / "cert"
    root.mkdir()
    (root / "aaBroken.cer").write_text(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    out, _ = connect_case(
        client_script, tmp_path, [("iasRootCa.cer", pkix["root"])], pkix["leaf"], [pkix["inter"]]
    )
    assert out["ok"] and out["verified"], out


def test_clock_not_synced(client_script, tmp_path, pkix):
    out, peer = connect_case(
        client_script,
        tmp_path,
        [("iasRootCa.cer", pkix["root"])],
        pkix["leaf"],
        [pkix["inter"]],
        synced=False,
    )
    assert out["ok"] is False and out["reason"] == "clock_unset", out
    assert peer.handshakes == 0 and peer.errors == []  # refused before any connection


def test_clock_before_build(client_script, tmp_path, pkix):
    out, _ = connect_case(
        client_script,
        tmp_path,
        [("iasRootCa.cer", pkix["root"])],
        pkix["leaf"],
        [pkix["inter"]],
        time=946684800 + 60,
    )
    assert out["ok"] is False and out["reason"] == "clock_unset", out


def test_connection_refused(client_script, tmp_path, pkix):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    root = tmp_path / "cert"
    write_anchor(root, "iasRootCa.cer", pkix["root"])
    out = run_client(client_script, {"root": str(root), "host": "127.0.0.1", "port": port})
    assert out["ok"] is False and out["reason"] == "refused", out


def test_silent_server_times_out(client_script, tmp_path, pkix):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts TCP in the backlog, never speaks TLS
    try:
        root = tmp_path / "cert"
        write_anchor(root, "iasRootCa.cer", pkix["root"])
        out = run_client(
            client_script,
            {
                "root": str(root),
                "host": "127.0.0.1",
                "port": listener.getsockname()[1],
                "timeout_ms": 300,
            },
        )
    finally:
        listener.close()
    assert out["ok"] is False and out["reason"] == "timeout", out


def test_stalled_reply_times_out(client_script, tmp_path, pkix):
    out, peer = connect_case(
        client_script,
        tmp_path,
        [("iasRootCa.cer", pkix["root"])],
        pkix["leaf"],
        [pkix["inter"]],
        reply=None,
        timeout_ms=400,
    )
    assert peer.handshakes == 1 and len(peer.requests) == 1
    assert out["ok"] is False and out["reason"] == "timeout", out


def test_stream_settimeout_bounds_later_reads(client_script, tmp_path, pkix):
    import time

    t = time.monotonic()
    out, _ = connect_case(
        client_script,
        tmp_path,
        [("iasRootCa.cer", pkix["root"])],
        pkix["leaf"],
        [pkix["inter"]],
        reply=None,
        timeout_ms=20000,
        read_timeout=0.3,
    )
    assert out["ok"] is False and out["reason"] == "timeout", out
    assert time.monotonic() - t < 5


def test_unverifying_port_says_so(client_script, tmp_path, pkix):
    # ESP8266 (axTLS) cannot verify: the stream still works, and says verified=False.
    out, _ = connect_case(
        client_script,
        tmp_path,
        [("iasRootCa.cer", pkix["other"])],
        pkix["leaf"],
        [pkix["inter"]],
        verifies=False,
        synced=False,
    )
    assert out["ok"] is True and out["verified"] is False, out
    assert out["reply"].startswith("HTTP/1.1 200 OK")


# -- what an anchor costs in RAM ---------------------------------------------------------------
RSS_SCRIPT = r"""
import gc, json, os, sys, tls
from ias import der

with open(sys.argv[1]) as f:
    p = json.load(f)

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

ders = []
for name in sorted(os.listdir(p["dir"]))[: p["n"]]:
    with open(p["dir"] + "/" + name) as f:
        ders.append(der.load(f.read()).der)
keep = []
gc.collect()
r0, m0 = rss(), gc.mem_alloc()
for i in range(p["k"]):
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    for d in ders:
        ctx.load_verify_locations(d)
    keep.append(ctx)
gc.collect()
print("RESULT " + json.dumps({"rss": rss() - r0, "gc": gc.mem_alloc() - m0}))
"""

HEAP_SCRIPT = r"""
import gc, json, sys, time
from ias import certstore

class Board:
    clock_synced = True
    tls_verifies = True
    def time(self):
        return int(time.time())

with open(sys.argv[1]) as f:
    p = json.load(f)
gc.collect()
base = gc.mem_alloc()
store = certstore.CertStore(p["root"])
s = certstore.connect("127.0.0.1", p["port"], store, Board())
s.write(b"GET / HTTP/1.1\r\n\r\n")
ok = s.read(15) == b"HTTP/1.1 200 OK"
s.close()
print("RESULT " + json.dumps({"ok": ok, "modules": base, "loaded": store.loaded}))
"""


def _run_mp(script_text, params, tmp_path, heap=None, path=None):
    script = tmp_path / ("s%d.py" % abs(hash(script_text)))
    script.write_text(script_text)
    pfile = tmp_path / "p.json"
    pfile.write_text(json.dumps(params))
    cmd = [micropython_binary()] + (["-X", "heapsize=%dk" % heap] if heap else [])
    env = dict(os.environ, MICROPYPATH=str(path or pkg_path()))
    proc = subprocess.run(
        cmd + [str(script), str(pfile)], capture_output=True, text=True, timeout=30, env=env
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return None


def test_anchor_ram_cost(tmp_path, pkix):
    """mbedTLS keeps each anchor outside the GC heap on unix (and ESP32): measured from the
    process's resident size over many contexts. The GC heap a verified connection needs is
    found by bisecting -X heapsize with the firmware compiled to .mpy, as on a device."""
    k = 150
    shipped = sorted((FIRMWARE / "cert").glob("*.cer"))
    r = {
        n: _run_mp(RSS_SCRIPT, {"dir": str(FIRMWARE / "cert"), "n": n, "k": k}, tmp_path)
        for n in (0, len(shipped))
    }
    per_anchor = (r[len(shipped)]["rss"] - r[0]["rss"]) / (k * len(shipped))
    per_ctx_gc = r[0]["gc"] / k
    der_avg = sum(
        len(
            pki.x509.load_pem_x509_certificate(p.read_bytes()).public_bytes(
                pki.serialization.Encoding.DER
            )
        )
        for p in shipped
    ) / len(shipped)
    print(
        "one anchor: %.0f bytes of mbedTLS heap (average DER %.0f bytes); one SSLContext: "
        "%.0f bytes of GC heap (+%.0f per anchor)"
        % (per_anchor, der_avg, per_ctx_gc, (r[len(shipped)]["gc"] - r[0]["gc"]) / k)
    )
    assert der_avg < per_anchor < 8 * der_avg
    assert abs(r[len(shipped)]["gc"] - r[0]["gc"]) / k < 64  # anchors live outside the GC heap

    mpy = tmp_path / "mpy"
    (mpy / "ias").mkdir(parents=True)
    for mod in ("board", "der", "fsutil", "log", "net", "certstore", "reason"):
        subprocess.run(
            [
                str(Path(micropython_binary()).parent / "mpy-cross"),
                "-o",
                str(mpy / "ias" / (mod + ".mpy")),
                str(FIRMWARE / (mod + ".py")),
            ],
            check=True,
        )
    # Two anchors (the largest shipped one and the test root) against all of them.
    one = tmp_path / "one"
    write_anchor(one, "zzTest.cer", pkix["root"])
    largest = max(shipped, key=lambda p: p.stat().st_size)
    shutil.copy(largest, one / largest.name)
    many = tmp_path / "many"
    many.mkdir()
    for p in shipped:
        shutil.copy(p, many / p.name)
    write_anchor(many, "zzTest.cer", pkix["root"])
    minimum = {}
    with TlsPeer(pkix["leaf"], [pkix["inter"]]) as peer:
        for label, root in (("2 anchors", one), ("%d anchors" % (len(shipped) + 1), many)):
            lo, hi = 16, 160  # KiB: lo fails, hi works
            params = {"root": str(root), "port": peer.port}
            top = _run_mp(HEAP_SCRIPT, params, tmp_path, heap=hi, path=mpy)
            assert top and top["ok"], top
            while hi - lo > 1:
                mid = (lo + hi) // 2
                res = _run_mp(HEAP_SCRIPT, params, tmp_path, heap=mid, path=mpy)
                if res and res["ok"]:
                    hi = mid
                else:
                    lo = mid
            minimum[label] = (hi, top["modules"], top["loaded"])
    for label, (kib, modules, _) in minimum.items():
        print(
            "verified connection with %s: smallest GC heap %d KiB (modules take %.1f KiB)"
            % (label, kib, modules / 1024)
        )
    small, big = minimum.values()
    assert big[2] == len(shipped) + 1 and small[2] == 2
    # Anchors are read one at a time through one buffer: the GC heap need does not grow with
    # their number (what is left is fragmentation noise of a few KiB).
    assert big[0] - small[0] <= 8 and big[0] <= 96
