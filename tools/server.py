"""`ias serve`: an IAS-compatible update server (HTTPS) for development, tests and self-hosting.

It answers what IOTAppStory answers (reference: ias-protocol.md §1.4, §6):
  GET /ota/updates?   304 Not Modified when the device's x-ESP-SKETCH-MD5 is the current
                      artifact's MD5, else 200 with Content-Length, x-name, x-ver, x-MD5, body
  GET /ota/logs?msg=  200 (the device ignores the answer)
  GET /ota/anchors/anchors.json and anchors.json.sig   from --anchors DIR (signed anchor bundles)

Artifacts (--artifacts DIR): one folder per app name, as the device reports it in x-ESP-VERSION
("<app> v<version>"):
  DIR/<app>/current.json   {"name": "<app>", "version": "1.2.0", "file": "app-1.2.0.tar.gz"}
  DIR/<app>/app-1.2.0.tar.gz
x-name and x-ver come from current.json ("name" defaults to the folder name); the MD5 is computed
from the file. --default-app NAME serves that app to devices whose app has no folder (a fresh
device reports " v"). Changing current.json takes effect on the next request.

TLS: --cert/--key (a PEM chain, leaf first, and its key), or a generated root -> intermediate ->
leaf chain for localhost and 127.0.0.1 (--host adds names) whose root is written to --root-out so
a device can trust it. --esp8266: RSA keys, only TLS_RSA_WITH_AES_*_CBC suites, TLS 1.2, and the
body in TLS records of at most 4 KiB (axTLS has a 5 KiB record buffer). --plain-port also serves
plain HTTP (recovery tests).

Every request is recorded (method, path, headers in order, the raw head) in memory and, with
--record FILE, as one JSON line each. Faults on demand (--fault KIND, or UpdateServer.fault() from
tests): close_early, wrong_length, long_body, wrong_md5, slow_body, garbage_headers, reset,
stall, no_response. UpdateServer.set_chain() switches the certificate chain while running.
"""

import argparse
import errno
import hashlib
import json
import socket
import socketserver
import ssl
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/server.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import pki

FAULTS = (
    "close_early",  # the head and half the body, then the connection closes
    "wrong_length",  # Content-Length 1000 more than the body; the connection closes after it
    "long_body",  # Content-Length 10 less than the body; x-MD5 covers all of it
    "wrong_md5",  # x-MD5 of something else
    "slow_body",  # the body at one byte a second (params: interval)
    "garbage_headers",  # a status line, then binary junk
    "reset",  # the head and half the body, then a TCP reset
    "stall",  # the head and half the body, then silence until the client gives up
    "no_response",  # the request is read, nothing is ever sent
)
BODY_FAULTS = (
    "close_early",
    "wrong_length",
    "long_body",
    "wrong_md5",
    "slow_body",
    "reset",
    "stall",
)
MAX_HEAD = 16384
IO_TIMEOUT = 10.0
HOLD_MAX = 120.0  # how long stall/no_response hold a connection at most
ESP8266_CIPHERS = "AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA"
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._- ")


def http_date(now=None):
    """The Date header every answer carries, as a web server's does (the device takes a
    verified peer's Date as authenticated time)."""
    from email.utils import formatdate

    return formatdate(now, usegmt=True)


class Artifact:
    def __init__(self, name, version, path):
        self.name, self.version, self.path = name, version, Path(path)
        data = self.path.read_bytes()
        self.size = len(data)
        self.md5 = hashlib.md5(data).hexdigest()
        self.sha256 = hashlib.sha256(data).hexdigest()


def _safe_name(name):
    return bool(name) and set(name) <= _SAFE and name not in (".", "..") and ".." not in name


def make_context(certfile, keyfile, esp8266=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certfile), str(keyfile))
    if esp8266:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 suites cannot be switched off
        ctx.set_ciphers(ESP8266_CIPHERS)
    return ctx


class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, addr, app, tls):
        self.app = app
        self.tls = tls
        super().__init__(addr, _Handler)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.app._handle(self.request, self.client_address, self.server.tls)


class PortBusy(OSError):
    """The port asked for is taken: the message names it and the option that changes it."""


class _Answer:
    """The connection, noting the status line of the answer sent (for the request log)."""

    def __init__(self, sock):
        self._sock = sock
        self.status = None

    def sendall(self, data):
        if self.status is None:
            self.status = bytes(data[:64]).split(b"\r\n", 1)[0].decode("latin-1")[9:]
        return self._sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def request_line(rec, status):
    """One log line per request: who, what, the device's app, the answer."""
    h = {n.lower(): v for n, v in rec["headers"]}
    app = h.get("x-esp-version")
    return "%s %s %s %s%s -> %s" % (
        time.strftime("%H:%M:%S"),
        rec["peer"],
        rec["method"] or "?",
        rec["path"].split("?", 1)[0],
        " (%s)" % app if app else "",
        status or "no answer",
    )


class UpdateServer:
    """An in-process, threaded IAS update server. start() returns the TLS port; stop() ends it.
    `requests` holds every request seen; fault() queues misbehaviour for /ota/updates."""

    def __init__(
        self,
        artifacts=None,
        port=0,
        host="127.0.0.1",
        cert=None,
        key=None,
        root_out=None,
        anchors=None,
        plain_port=None,
        esp8266=False,
        record=None,
        hosts=("localhost", "127.0.0.1"),
        default_app=None,
        tls=True,
        log=None,
    ):
        self.artifacts = Path(artifacts) if artifacts else None
        self.log = log  # called with one line per request (ias serve prints them)
        self.anchors = Path(anchors) if anchors else None
        self.host = host
        self.port = port
        self.plain_port = plain_port
        self.esp8266 = esp8266
        self.record_path = Path(record) if record else None
        self.default_app = default_app
        self.use_tls = tls
        self.requests = []
        self.retry_after = None  # seconds, sent with every 304 when set
        self.record_size = 4096 if esp8266 else 16384
        self.slow_interval = 1.0
        self.root = None  # the generated root (pki.Issued), when no --cert was given
        self._faults = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._servers = []
        self._dir = Path(tempfile.mkdtemp(prefix="ias-serve-"))
        self.context = None
        if tls:
            if cert:
                self.set_chain(cert, key)
            else:
                self.generate_chain(hosts, root_out)

    # -- TLS ---------------------------------------------------------------------------------
    def generate_chain(self, hosts=("localhost", "127.0.0.1"), root_out=None, root=None):
        """A fresh root -> intermediate -> leaf chain (RSA with --esp8266), in use at once for
        new connections. Returns the root; its PEM goes to root_out when given."""
        kind = "rsa" if self.esp8266 else "ec"
        root = root or pki.make_ca("IAS serve root", kind=kind)
        inter = pki.make_ca("IAS serve intermediate", issuer=root, kind=kind, not_after=1825)
        leaf = pki.make_leaf(inter, hosts=tuple(hosts), kind=kind)
        self.use_chain(leaf, [inter])
        self.root = root
        if root_out:
            Path(root_out).parent.mkdir(parents=True, exist_ok=True)
            Path(root_out).write_bytes(root.pem)
        return root

    def use_chain(self, leaf, chain=()):
        """Serve leaf (+ chain) from now on: pki.Issued objects."""
        n = len(list(self._dir.iterdir()))
        cert, key = pki.write_server_files(self._dir / ("chain%d" % n), leaf, chain)
        self.set_chain(cert, key)

    def set_chain(self, certfile, keyfile):
        """Switch the certificate chain: a new SSLContext for every new connection."""
        self.context = make_context(certfile, keyfile, self.esp8266)

    # -- faults ------------------------------------------------------------------------------
    def fault(self, kind, count=1, **params):
        """Misbehave on the next `count` /ota/updates requests (None: until clear_faults())."""
        if kind not in FAULTS:
            raise ValueError("unknown fault %r; known: %s" % (kind, ", ".join(FAULTS)))
        with self._lock:
            self._faults.append([kind, count, params])

    def clear_faults(self):
        with self._lock:
            self._faults = []

    def _take_fault(self):
        with self._lock:
            if not self._faults:
                return None, {}
            entry = self._faults[0]
            if entry[1] is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    self._faults.pop(0)
            return entry[0], entry[2]

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self):
        self._stop.clear()
        main = self._bind(self.port, self.use_tls, "--port")
        self.port = main.server_address[1]
        self._servers = [main]
        if self.plain_port is not None and self.use_tls:
            try:
                plain = self._bind(self.plain_port, False, "--plain-port")
            except OSError:
                main.server_close()
                raise
            self.plain_port = plain.server_address[1]
            self._servers.append(plain)
        for srv in self._servers:
            threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
            ).start()
        return self.port

    def _bind(self, port, tls, option):
        try:
            return _TCPServer((self.host, port), self, tls)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise PortBusy(
                    "port %d on %s is busy (another server listens there): choose another "
                    "with %s" % (port, self.host, option)
                ) from None
            raise

    def stop(self):
        self._stop.set()
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        self._servers = []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self.use_tls else "http", self.host, self.port)

    # -- one connection ----------------------------------------------------------------------
    def _handle(self, sock, peer, tls):
        sock.settimeout(IO_TIMEOUT)
        raw = sock
        if tls:
            try:
                sock = self.context.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError) as e:
                self._record({"peer": peer[0], "tls": True, "error": "handshake: %s" % e})
                return
        try:
            head = self._read_head(sock)
            if head is None:
                return
            rec = self._parse(head, peer, sock if tls else None)
            self._record(rec)
            answer = _Answer(sock)
            try:
                self._route(answer, raw, rec)
            finally:
                if self.log is not None:
                    self.log(request_line(rec, answer.status))
        except OSError:
            pass  # the client went away; nothing to answer
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _read_head(self, sock):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
            if len(data) > MAX_HEAD:
                sock.sendall(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
                return None
        return data[: data.index(b"\r\n\r\n") + 4]

    def _parse(self, head, peer, tls_sock):
        text = head.decode("latin-1")
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        method, target = (parts[0], parts[1]) if len(parts) >= 3 else ("", "")
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers.append([name, value.strip()])
        rec = {
            "t": time.time(),
            "peer": peer[0],
            "tls": tls_sock is not None,
            "method": method,
            "path": target,
            "headers": headers,
            "raw": text,
        }
        if tls_sock is not None:
            c = tls_sock.cipher()
            rec["cipher"], rec["tls_version"] = (c[0], c[1]) if c else (None, None)
        return rec

    def _record(self, rec):
        with self._lock:
            self.requests.append(rec)
            if self.record_path:
                with open(self.record_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")

    def _route(self, sock, raw, rec):
        path = rec["path"].split("?", 1)[0]
        if rec["method"] != "GET":
            return self._send(sock, 405, "Method Not Allowed")
        if path == "/ota/updates":
            return self._updates(sock, raw, rec)
        if path == "/ota/logs":
            return self._send(sock, 200, "OK")
        if path.startswith("/ota/anchors/") and self.anchors:
            name = path[len("/ota/anchors/") :]
            f = self.anchors / name
            if _safe_name(name) and "/" not in name and f.is_file():
                kind = "application/json" if name.endswith(".json") else "application/octet-stream"
                return self._send(sock, 200, "OK", f.read_bytes(), [("Content-Type", kind)])
        return self._send(sock, 404, "Not Found")

    def _send(self, sock, status, reason, body=b"", extra=()):
        head = "HTTP/1.1 %d %s\r\nDate: %s\r\n" % (status, reason, http_date())
        for name, value in extra:
            head += "%s: %s\r\n" % (name, value)
        head += "Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        sock.sendall(head.encode("latin-1"))
        self._send_body(sock, body)

    def _send_body(self, sock, body):
        view = memoryview(body)
        for i in range(0, len(body), self.record_size):  # one TLS record per chunk
            sock.sendall(view[i : i + self.record_size])

    # -- /ota/updates ------------------------------------------------------------------------
    def artifact(self, app):
        """The current artifact of an app, or None."""
        if self.artifacts is None:
            return None
        for candidate in (app, self.default_app):
            if candidate and _safe_name(candidate):
                meta = self.artifacts / candidate / "current.json"
                if meta.is_file():
                    info = json.loads(meta.read_text())
                    return Artifact(
                        info.get("name", candidate),
                        info["version"],
                        self.artifacts / candidate / info["file"],
                    )
        return None

    def _updates(self, sock, raw, rec):
        h = {n.lower(): v for n, v in rec["headers"]}
        kind, params = self._take_fault()
        if kind == "no_response":
            return self._hold(sock)
        if kind == "garbage_headers":
            junk = bytes((i * 37 + 11) & 0xFF for i in range(600))
            return sock.sendall(b"HTTP/1.1 200 OK\r\n" + junk + b"\r\n\r\n")
        version = h.get("x-esp-version", "")
        app = version.rsplit(" v", 1)[0] if " v" in version else version
        art = self.artifact(app)
        if art is None:
            return self._send(sock, 404, "No update assigned to this app")
        current = h.get("x-esp-sketch-md5", "").lower() == art.md5
        if h.get("x-esp-mode", "sketch") != "sketch" or (current and kind not in BODY_FAULTS):
            extra = [("Retry-After", str(self.retry_after))] if self.retry_after else []
            return self._send(sock, 304, "Not Modified", b"", extra)
        body = art.path.read_bytes()
        length, md5 = len(body), art.md5
        if kind == "wrong_length":
            length = len(body) + 1000
        elif kind == "long_body":
            length = max(1, len(body) - 10)
        elif kind == "wrong_md5":
            md5 = hashlib.md5(body + b"x").hexdigest()
        head = (
            "HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: %d\r\nx-name: %s\r\nx-ver: %s\r\nx-MD5: %s\r\n"
            "Connection: close\r\n\r\n" % (http_date(), length, art.name, art.version, md5)
        )
        sock.sendall(head.encode("latin-1"))
        if kind in ("close_early", "reset", "stall"):
            self._send_body(sock, body[: len(body) // 2])
            if kind == "reset":  # linger 0: close() sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            elif kind == "stall":
                self._hold(sock)
            return None
        if kind == "slow_body":
            interval = params.get("interval", self.slow_interval)
            for i in range(len(body)):
                if self._stop.wait(interval):
                    return None
                sock.sendall(body[i : i + 1])
            return None
        self._send_body(sock, body)
        return None

    def _hold(self, sock):
        # silence until the client closes, the server stops, or HOLD_MAX passes
        sock.settimeout(0.2)
        end = time.monotonic() + HOLD_MAX
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                if not sock.recv(1024):
                    return
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                return


# -- the command line -------------------------------------------------------------------------


def _configure(p):
    p.add_argument("--port", type=int, default=8443, help="TLS port (0: any free port)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    p.add_argument("--artifacts", help="folder of apps: DIR/<app>/current.json and the file")
    p.add_argument("--default-app", help="app served to devices whose app has no folder")
    p.add_argument("--cert", help="PEM certificate chain, leaf first")
    p.add_argument("--key", help="PEM private key of the leaf")
    p.add_argument("--root-out", help="with a generated chain: write its root (PEM) here")
    p.add_argument("--host", action="append", default=[], help="extra name for the generated leaf")
    p.add_argument("--anchors", help="folder with anchors.json and anchors.json.sig")
    p.add_argument("--plain-port", type=int, help="also serve plain HTTP on this port")
    p.add_argument("--esp8266", action="store_true", help="RSA, AES-CBC suites, 4 KiB records")
    p.add_argument("--record", help="append every request as a JSON line to this file")
    p.add_argument("--retry-after", type=int, help="send Retry-After with every 304")
    p.add_argument("--fault", choices=FAULTS, help="misbehave on every /ota/updates request")
    p.set_defaults(func=run)


def add_parser(subparsers, summary):
    p = subparsers.add_parser(
        "serve",
        help=summary,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(p)
    return p


def _say(line):
    print("ias serve: " + line, flush=True)


def run(args):
    if bool(args.cert) != bool(args.key):
        raise ValueError("--cert and --key go together")
    if args.artifacts and not Path(args.artifacts).is_dir():
        _say(
            "warning: the artifacts folder %s does not exist (yet): every device gets "
            "404 until it holds APP/current.json and the bundle" % args.artifacts
        )
    srv = UpdateServer(
        artifacts=args.artifacts,
        port=args.port,
        host=args.bind,
        cert=args.cert,
        key=args.key,
        root_out=args.root_out,
        anchors=args.anchors,
        plain_port=args.plain_port,
        esp8266=args.esp8266,
        record=args.record,
        hosts=("localhost", "127.0.0.1", *args.host),
        default_app=args.default_app,
        log=_say,
    )
    srv.retry_after = args.retry_after
    if args.fault:
        srv.fault(args.fault, count=None)
    try:
        srv.start()
    except PortBusy as e:
        raise SystemExit("ias serve: %s" % e)
    print("ias serve: %s" % srv.url, flush=True)
    if srv.plain_port:
        print("ias serve: http://%s:%d (plain)" % (srv.host, srv.plain_port), flush=True)
    if args.root_out:
        print("ias serve: root certificate written to %s" % args.root_out, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="ias serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _configure(p)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
