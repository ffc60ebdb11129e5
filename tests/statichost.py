"""A CPython static file host on loopback for channel tests: plain HTTP or TLS.

    with StaticHost(folder) as host:                     # plain HTTP
    with StaticHost(folder, tls=(leaf, [inter])) as h:   # TLS with a tools.pki chain
        h.url("/channel.json")
        h.redirect("/channel.json", other.url("/x/channel.json"))   # or a relative Location
        h.ignore_range = True          # answer 200 with the whole file to a Range request
        h.cut("/app.tar", 3000, 9000)  # the next answers for that path end after N body bytes
        h.pace("/app.tar", 2048)       # that path's body at a steady 2048 bytes a second
        h.log                          # one dict per request: path, headers, status, sent

Files are served with a strong ETag (from their SHA-256) and Last-Modified (from their mtime);
If-None-Match / If-Modified-Since give 304, `Range: bytes=N-` gives 206 with Content-Range.
One connection at a time, `Connection: close` after every answer (what the device expects).
"""

import email.utils
import hashlib
import ssl
import tempfile
import threading
import time
from pathlib import Path

from tlspeer import listen_loopback

REASONS = {
    200: "OK",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    307: "Temporary Redirect",
    404: "Not Found",
    405: "Method Not Allowed",
    416: "Range Not Satisfiable",
}


class StaticHost:
    def __init__(self, root, tls=None, host="127.0.0.1"):
        self.root = Path(root)
        self.tls = tls
        self.host = host
        self.ignore_range = False
        self.log = []
        self.errors = []
        self._redirects = {}
        self._cuts = {}
        self._paces = {}
        self._ctx = None
        self._dir = None
        self._listener = None
        self._thread = None
        self._stop = threading.Event()
        self.port = None

    # -- configuration ----------------------------------------------------------------------------
    @property
    def scheme(self):
        return "https" if self.tls else "http"

    def url(self, path="/"):
        return "%s://%s:%d%s" % (self.scheme, self.host, self.port, path)

    def redirect(self, path, location, status=302):
        self._redirects[path] = (status, location)

    def cut(self, path, *counts):
        """The next len(counts) answers for `path` close after that many body bytes."""
        self._cuts.setdefault(path, []).extend(counts)

    def pace(self, path, bytes_per_s, chunk=None):
        """Answers for `path` send their body at a steady rate: `chunk` bytes (default a tenth
        of a second's worth, at least one) every chunk / bytes_per_s seconds."""
        chunk = chunk or max(1, bytes_per_s // 10)
        self._paces[path] = (chunk, chunk / bytes_per_s)

    def requests_for(self, path):
        return [r for r in self.log if r["path"] == path]

    def sent_bytes(self, path=None):
        return sum(r["sent"] for r in self.log if path is None or r["path"] == path)

    # -- life cycle -------------------------------------------------------------------------------
    def start(self):
        if self.tls:
            leaf, chain = self.tls
            self._dir = tempfile.TemporaryDirectory(prefix="statichost-")
            cert = Path(self._dir.name) / "cert.pem"
            key = Path(self._dir.name) / "key.pem"
            cert.write_bytes(leaf.pem + b"".join(c.pem for c in chain))
            key.write_bytes(leaf.key_pem)
            self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ctx.load_cert_chain(str(cert), str(key))
        self._listener = listen_loopback(self.host)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        if self._thread is not None:
            self._thread.join(2)
        if self._dir is not None:
            self._dir.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- serving ----------------------------------------------------------------------------------
    def _serve(self):
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(10)
            try:
                conn = self._ctx.wrap_socket(raw, server_side=True) if self._ctx else raw
                with conn:
                    self._one(conn)
            except (ssl.SSLError, OSError, ValueError) as e:
                self.errors.append(repr(e))
            finally:
                raw.close()

    def _one(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
            if len(data) > 65536:
                raise ValueError("request head too large")
        lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        rec = {"method": method, "path": path, "target": target, "headers": headers}
        rec["status"], rec["sent"] = self._answer(conn, method, path, headers)
        self.log.append(rec)

    def _send(self, conn, status, heads, body=b"", limit=None, pace=None):
        head = "HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "X"))
        for name, value in heads:
            head += "%s: %s\r\n" % (name, value)
        head += "Connection: close\r\n\r\n"
        conn.sendall(head.encode("latin-1"))
        if limit is not None:
            body = body[:limit]
        if pace is None:
            conn.sendall(body)
            return status, len(body)
        chunk, interval = pace
        sent = 0
        start = time.monotonic()
        while sent < len(body):
            # on a schedule from the start, so the rate stays steady whatever each send costs
            wait = start + (sent // chunk) * interval - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            try:
                conn.sendall(body[sent : sent + chunk])
            except OSError:  # the client cut the transfer
                break
            sent += len(body[sent : sent + chunk])
        return status, sent

    def _answer(self, conn, method, path, headers):
        if method != "GET":
            return self._send(conn, 405, [("Content-Length", "0")])
        if path in self._redirects:
            status, location = self._redirects[path]
            return self._send(conn, status, [("Location", location), ("Content-Length", "0")])
        file = (self.root / path.lstrip("/")).resolve()
        if self.root.resolve() not in file.parents or not file.is_file():
            return self._send(conn, 404, [("Content-Length", "0")])
        body = file.read_bytes()
        etag = '"%s"' % hashlib.sha256(body).hexdigest()[:20]
        modified = email.utils.formatdate(int(file.stat().st_mtime), usegmt=True)
        validators = [("ETag", etag), ("Last-Modified", modified)]
        inm = headers.get("if-none-match")
        ims = headers.get("if-modified-since")
        if (inm is not None and etag in [t.strip() for t in inm.split(",")]) or (
            inm is None and ims == modified
        ):
            return self._send(conn, 304, validators)
        limit = None
        cuts = self._cuts.get(path)
        if cuts:
            limit = cuts.pop(0)
        rng = headers.get("range")
        if rng and not self.ignore_range and rng.startswith("bytes=") and rng.endswith("-"):
            first = int(rng[6:-1])
            if first >= len(body):
                return self._send(conn, 416, [("Content-Range", "bytes */%d" % len(body))])
            part = body[first:]
            heads = validators + [
                ("Content-Length", str(len(part))),
                ("Content-Range", "bytes %d-%d/%d" % (first, len(body) - 1, len(body))),
            ]
            return self._send(conn, 206, heads, part, limit, self._paces.get(path))
        heads = validators + [("Content-Length", str(len(body))), ("Accept-Ranges", "bytes")]
        return self._send(conn, 200, heads, body, limit, self._paces.get(path))
