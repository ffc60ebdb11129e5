"""A CPython TLS server on loopback for tests: serves a fixed reply over a chosen chain.

    with TlsPeer(leaf, chain=[intermediate]) as peer:
        ... connect to 127.0.0.1:peer.port ...
    peer.handshakes, peer.requests, peer.errors, peer.sni tell what the server saw.

`reply=None` makes a server that handshakes, reads the request and then never answers.
`leaf` and `chain` are tools.pki.Issued objects (anything with .pem; the leaf also .key_pem).
The server runs in a daemon thread, one connection at a time, on a port picked by the OS.
"""

import socket
import ssl
import tempfile
import threading
from pathlib import Path

DEFAULT_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


def listen_loopback(host="127.0.0.1"):
    """A listening socket on a free port; accept() wakes every 0.2 s so a stop is noticed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(8)
    sock.settimeout(0.2)
    return sock


class TlsPeer:
    def __init__(
        self,
        leaf,
        chain=(),
        reply=DEFAULT_REPLY,
        host="127.0.0.1",
        max_version=None,
        read_request=True,
    ):
        self.reply = reply
        self.host = host
        self.read_request = read_request
        self.handshakes = 0
        self.requests = []
        self.errors = []
        self.sni = []
        self._dir = tempfile.TemporaryDirectory(prefix="tlspeer-")
        cert = Path(self._dir.name) / "cert.pem"
        key = Path(self._dir.name) / "key.pem"
        cert.write_bytes(leaf.pem + b"".join(c.pem for c in chain))
        key.write_bytes(leaf.key_pem)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        if max_version is not None:
            self.ctx.maximum_version = max_version
        self.ctx.sni_callback = self._on_sni
        self._listener = None
        self._thread = None
        self._stop = threading.Event()
        self.port = None

    def _on_sni(self, sslsock, name, ctx):
        self.sni.append(name)

    def start(self):
        self._listener = listen_loopback(self.host)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self):
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(5)
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as conn:
                    self.handshakes += 1
                    request = b""
                    while self.read_request and b"\r\n\r\n" not in request:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        request += chunk
                    self.requests.append(request)
                    if self.reply is None:  # a server that stalls after the request
                        self._stop.wait(10)
                    else:
                        conn.sendall(self.reply)
            except (ssl.SSLError, OSError) as e:  # the client refused us, or went away
                self.errors.append(repr(e))
            finally:
                raw.close()

    def stop(self):
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        if self._thread is not None:
            self._thread.join(2)
        self._dir.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
