"""`ias serve` (tools/server.py) over real TLS on loopback: the 304/200 decision, recording,
each fault, switching the certificate chain, the ESP8266 profile (suites and record sizes)."""

import hashlib
import json
import socket
import ssl
import time

import pytest

from tools import server as srvmod
from tools.server import UpdateServer

BODY = bytes((i * 31) & 0xFF for i in range(20000))
MD5 = hashlib.md5(BODY).hexdigest()


def head_lines(app="IASBlink", md5="0" * 32, mode="sketch"):
    return [
        ("User-Agent", "ESP-http-Update"),
        ("x-ESP-STA-MAC", "24:0A:C4:12:34:56"),
        ("x-ESP-SKETCH-MD5", md5),
        ("x-ESP-VERSION", "%s v1.0.0" % app),
        ("x-ESP-MODE", mode),
        ("Connection", "close"),
    ]


def request_bytes(path="/ota/updates?", headers=None):
    lines = ["GET %s HTTP/1.1" % path, "Host: localhost"]
    lines += ["%s: %s" % h for h in (headers if headers is not None else head_lines())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def artifacts(tmp_path, body=BODY, version="1.1.0"):
    app = tmp_path / "art" / "IASBlink"
    app.mkdir(parents=True)
    (app / "blink.bin").write_bytes(body)
    (app / "current.json").write_text(json.dumps({"version": version, "file": "blink.bin"}))
    return tmp_path / "art"


@pytest.fixture
def srv(tmp_path):
    s = UpdateServer(
        artifacts=artifacts(tmp_path),
        port=0,
        root_out=tmp_path / "root.pem",
        record=tmp_path / "rec.jsonl",
        plain_port=0,
    )
    s.start()
    yield s
    s.stop()


def client_ctx(root_pem):
    ctx = ssl.create_default_context(cadata=root_pem.decode())
    return ctx


def exchange(srv, data, root=None, timeout=5.0, plain=False, ragged_ok=True):
    """Send raw request bytes; return (everything received, error or None). The server closes
    TCP after a response (Connection: close, no close_notify), as IOTAppStory devices expect."""
    raw = socket.create_connection(("127.0.0.1", srv.plain_port if plain else srv.port), timeout)
    sock = (
        raw
        if plain
        else client_ctx(root or srv.root.pem).wrap_socket(
            raw, server_hostname="localhost", suppress_ragged_eofs=ragged_ok
        )
    )
    got, err = b"", None
    try:
        sock.sendall(data)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except (OSError, ssl.SSLError) as e:
        err = e
    finally:
        sock.close()
    return got, err


def split(resp):
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


def test_200_with_ias_headers_then_304(srv):
    resp, err = exchange(srv, request_bytes())
    status, h, body = split(resp)
    assert err is None and status == "HTTP/1.1 200 OK"
    assert h["Content-Length"] == str(len(BODY)) and h["x-name"] == "IASBlink"
    assert h["x-ver"] == "1.1.0" and h["x-MD5"] == MD5 and body == BODY
    resp, _ = exchange(srv, request_bytes(headers=head_lines(md5=MD5.upper())))
    assert split(resp)[0] == "HTTP/1.1 304 Not Modified"
    srv.retry_after = 600
    resp, _ = exchange(srv, request_bytes(headers=head_lines(md5=MD5)))
    assert split(resp)[1]["Retry-After"] == "600"


def test_unknown_app_spiffs_logs_anchors(srv, tmp_path):
    status = split(exchange(srv, request_bytes(headers=head_lines(app="Other")))[0])[0]
    assert status == "HTTP/1.1 404 No update assigned to this app"
    status = split(exchange(srv, request_bytes(headers=head_lines(mode="spiffs")))[0])[0]
    assert status == "HTTP/1.1 304 Not Modified"
    assert split(exchange(srv, request_bytes("/ota/logs?msg=1"))[0])[0] == "HTTP/1.1 200 OK"
    assert split(exchange(srv, request_bytes("/ota/anchors/anchors.json"))[0])[0].endswith(
        "404 Not Found"
    )
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    (anchors / "anchors.json").write_text('{"version": 2}')
    (anchors / "anchors.json.sig").write_bytes(b"\x01\x02")
    srv.anchors = anchors
    _, h, body = split(exchange(srv, request_bytes("/ota/anchors/anchors.json"))[0])
    assert body == b'{"version": 2}' and h["Content-Type"] == "application/json"
    assert (
        split(exchange(srv, request_bytes("/ota/anchors/anchors.json.sig"))[0])[2] == b"\x01\x02"
    )
    assert "404" in split(exchange(srv, request_bytes("/ota/anchors/../current.json"))[0])[0]
    # the plain port answers the same routes without TLS
    _, _, body = split(exchange(srv, request_bytes("/ota/anchors/anchors.json"), plain=True)[0])
    assert body == b'{"version": 2}'


def test_default_app(tmp_path):
    with UpdateServer(artifacts=artifacts(tmp_path), default_app="IASBlink") as s:
        resp, _ = exchange(s, request_bytes(headers=head_lines(app="")))
        assert split(resp)[1]["x-name"] == "IASBlink"


def test_recording_in_memory_and_jsonl(srv, tmp_path):
    req = request_bytes(headers=head_lines(md5=MD5))
    exchange(srv, req)
    rec = srv.requests[-1]
    assert rec["method"] == "GET" and rec["path"] == "/ota/updates?" and rec["tls"]
    assert rec["raw"].encode("latin-1") == req
    assert rec["headers"] == [["Host", "localhost"]] + [list(h) for h in head_lines(md5=MD5)]
    lines = (tmp_path / "rec.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["raw"] == rec["raw"]


def test_fault_close_early(srv):
    srv.fault("close_early")
    resp, _ = exchange(srv, request_bytes())
    _, h, body = split(resp)
    assert int(h["Content-Length"]) == len(BODY) and len(body) == len(BODY) // 2
    # the fault was used up: the next request is served normally
    assert split(exchange(srv, request_bytes())[0])[2] == BODY


def test_fault_wrong_length_long_body_wrong_md5(srv):
    srv.fault("wrong_length")
    _, h, body = split(exchange(srv, request_bytes())[0])
    assert int(h["Content-Length"]) == len(BODY) + 1000 and body == BODY
    srv.fault("long_body")
    _, h, body = split(exchange(srv, request_bytes())[0])
    assert int(h["Content-Length"]) == len(BODY) - 10 and body == BODY and h["x-MD5"] == MD5
    srv.fault("wrong_md5")
    _, h, body = split(exchange(srv, request_bytes())[0])
    assert body == BODY and h["x-MD5"] != MD5 and len(h["x-MD5"]) == 32


def test_body_faults_apply_even_when_current(srv):
    srv.fault("wrong_md5")
    status, h, _ = split(exchange(srv, request_bytes(headers=head_lines(md5=MD5)))[0])
    assert status == "HTTP/1.1 200 OK" and h["x-MD5"] != MD5


def test_fault_slow_body(srv):
    srv.fault("slow_body", interval=0.02)
    raw = socket.create_connection(("127.0.0.1", srv.port), 5)
    sock = client_ctx(srv.root.pem).wrap_socket(raw, server_hostname="localhost")
    sock.sendall(request_bytes())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    body = data.split(b"\r\n\r\n", 1)[1]
    t0 = time.monotonic()
    while len(body) < 20:
        chunk = sock.recv(4096)
        assert len(chunk) == 1  # one byte at a time
        body += chunk
    elapsed = time.monotonic() - t0
    sock.close()
    assert body == BODY[:20] and elapsed >= 19 * 0.02 * 0.8


def test_fault_garbage_headers(srv):
    srv.fault("garbage_headers")
    resp, _ = exchange(srv, request_bytes())
    assert resp.startswith(b"HTTP/1.1 200 OK\r\n") and b"x-MD5" not in resp
    assert any(b > 127 for b in resp)


def test_fault_reset(srv):
    srv.fault("reset")
    resp, err = exchange(srv, request_bytes(), plain=True)
    assert isinstance(err, ConnectionResetError), err
    assert len(split(resp)[2]) <= len(BODY) // 2  # a reset may drop what was not yet read
    srv.fault("reset")
    resp, err = exchange(srv, request_bytes(), ragged_ok=False)
    assert isinstance(err, (ConnectionResetError, ssl.SSLError)), err
    assert len(split(resp)[2]) <= len(BODY) // 2


@pytest.mark.parametrize("kind", ["stall", "no_response"])
def test_fault_stall_and_no_response(srv, kind):
    srv.fault(kind)
    t0 = time.monotonic()
    resp, err = exchange(srv, request_bytes(), timeout=0.5)
    assert isinstance(err, TimeoutError), err
    assert time.monotonic() - t0 < 3
    if kind == "stall":
        assert len(split(resp)[2]) == len(BODY) // 2
    else:
        assert resp == b""


def test_standing_fault_and_clear(srv):
    srv.fault("wrong_md5", count=None)
    for _ in range(3):
        assert split(exchange(srv, request_bytes())[0])[1]["x-MD5"] != MD5
    srv.clear_faults()
    assert split(exchange(srv, request_bytes())[0])[1]["x-MD5"] == MD5
    with pytest.raises(ValueError):
        srv.fault("explode")


def test_switch_chain_while_running(srv, tmp_path):
    old = srv.root.pem
    assert exchange(srv, request_bytes(), root=old)[1] is None
    srv.generate_chain(root_out=tmp_path / "root2.pem")
    new = (tmp_path / "root2.pem").read_bytes()
    assert new != old
    with pytest.raises(ssl.SSLCertVerificationError):
        exchange(srv, request_bytes(), root=old)
    assert split(exchange(srv, request_bytes(), root=new)[0])[2] == BODY
    failed = [r for r in srv.requests if "error" in r]
    assert failed and "handshake" in failed[-1]["error"]


def _records(srv, root_pem, data, ciphers):
    """Talk TLS through memory BIOs so every record the server sends can be measured."""
    ctx = client_ctx(root_pem)
    ctx.set_ciphers(ciphers)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    sock = socket.create_connection(("127.0.0.1", srv.port), 5)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    records = []

    def pump():
        if out.pending:
            sock.sendall(out.read())
        hdr = b""
        while len(hdr) < 5:
            c = sock.recv(5 - len(hdr))
            if not c:
                return False
            hdr += c
        n = int.from_bytes(hdr[3:5], "big")
        rest = b""
        while len(rest) < n:
            rest += sock.recv(n - len(rest))
        records.append((hdr[0], n))
        inc.write(hdr + rest)
        return True

    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            assert pump()
    obj.write(data)
    sock.sendall(out.read())
    got = b""
    while True:
        try:
            got += obj.read(65536)
        except ssl.SSLWantReadError:
            if not pump():
                break
        except ssl.SSLZeroReturnError:
            break
    sock.close()
    return obj.cipher(), records, got


def test_esp8266_profile(tmp_path):
    big = bytes(range(256)) * 100  # 25.6 KB
    with UpdateServer(artifacts=artifacts(tmp_path, big), esp8266=True) as s:
        key = s.root.cert.public_key()
        assert type(key).__name__.startswith("_RSAPublicKey") or "RSA" in type(key).__name__
        cipher, records, got = _records(s, s.root.pem, request_bytes(), "AES128-SHA:AES256-SHA256")
        assert cipher[0] in ("AES128-SHA", "AES256-SHA256") and cipher[1] == "TLSv1.2"
        data = [n for t, n in records if t == 23]  # application data records
        assert split(got)[2] == big
        assert len(data) >= 7 and max(data) <= 4096 + 64, data
        # clients offering only modern ECDHE/AEAD suites are refused
        ctx = client_ctx(s.root.pem)
        ctx.set_ciphers("ECDHE+AESGCM")
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            with socket.create_connection(("127.0.0.1", s.port), 5) as raw:
                ctx.wrap_socket(raw, server_hostname="localhost")


def test_given_cert_and_cli_parser(tmp_path):
    from tools import pki

    root = pki.make_ca("given root")
    leaf = pki.make_leaf(root)
    cert, key = pki.write_server_files(tmp_path / "tls", leaf)
    with UpdateServer(artifacts=artifacts(tmp_path), cert=cert, key=key) as s:
        assert s.root is None
        assert split(exchange(s, request_bytes(), root=root.pem)[0])[2] == BODY
    import argparse

    parser = argparse.ArgumentParser()
    subs = parser.add_subparsers()
    srvmod.add_parser(subs, "serve")
    args = parser.parse_args(["serve", "--port", "0", "--esp8266", "--fault", "stall"])
    assert args.func is srvmod.run and args.esp8266 and args.fault == "stall"
