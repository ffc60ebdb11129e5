"""A scripted hostile TLS server on loopback, for what `ias serve` cannot misbehave at: resets at
every phase, truncated and oversized heads, TLS alerts and tampered records mid-stream.

TLS runs through ssl.SSLObject over memory BIOs, so a script can also write raw bytes under the
TLS layer. Each accepted connection runs the next queued script (default: `up_to_date`), a
function taking a Conn. Exceptions in a script are the device hanging up: they are recorded,
never raised."""

import socket
import ssl
import struct
import tempfile
import threading
import time
from pathlib import Path

RECV = 16384


class Conn:
    def __init__(self, sock, ctx):
        self.sock = sock
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.request = b""

    def _flush(self, tamper=None):
        data = self.out.read()
        if data:
            self.sock.sendall(tamper(data) if tamper else data)

    def _pull(self):
        data = self.sock.recv(RECV)
        if not data:
            raise EOFError("client closed")
        self.inc.write(data)

    def client_hello(self):
        """Read the raw ClientHello bytes without answering (for cuts inside the handshake)."""
        return self.sock.recv(RECV)

    def handshake(self):
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                self._pull()

    def read_request(self):
        while b"\r\n\r\n" not in self.request:
            try:
                self.request += self.tls.read(RECV)
            except ssl.SSLWantReadError:
                self._flush()
                self._pull()
        return self.request

    def send(self, data, tamper=None):
        view = memoryview(data)
        for i in range(0, len(data), 4096):  # one record each
            self.tls.write(view[i : i + 4096])
            self._flush(tamper)

    def raw(self, data):
        self.sock.sendall(data)

    def close_notify(self):
        try:
            self.tls.unwrap()
        except ssl.SSLError:
            pass
        self._flush()

    def rst(self):
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def hold(self, seconds):
        """Silence until the device hangs up (or `seconds`)."""
        self.sock.settimeout(0.2)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                if not self.sock.recv(RECV):
                    return
            except TimeoutError:
                continue
            except OSError:
                return


def up_to_date(c):
    c.handshake()
    c.read_request()
    c.send(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    c.close_notify()


class HostileServer:
    def __init__(self, leaf, chain=()):
        self._dir = tempfile.TemporaryDirectory(prefix="hostile-")
        cert, key = Path(self._dir.name) / "c.pem", Path(self._dir.name) / "k.pem"
        cert.write_bytes(leaf.pem + b"".join(c.pem for c in chain))
        key.write_bytes(leaf.key_pem)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.scripts = []
        self.errors = []
        self.served = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def queue(self, script):
        with self._lock:
            self.scripts.append(script)

    def start(self):
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()
        return self.port

    def stop(self):
        self._stop.set()
        self._listener.close()
        self._dir.cleanup()

    def _serve(self):
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                script = self.scripts.pop(0) if self.scripts else up_to_date
            threading.Thread(target=self._run, args=(sock, script), daemon=True).start()

    def _run(self, sock, script):
        sock.settimeout(30)
        self.served += 1
        try:
            script(Conn(sock, self.ctx))
        except Exception as e:  # the device hung up on us: expected in most scripts
            self.errors.append("%s: %r" % (getattr(script, "__name__", "?"), e))
        finally:
            try:
                sock.close()
            except OSError:
                pass
