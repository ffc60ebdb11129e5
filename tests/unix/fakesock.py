# A fake `socket` module for unit tests with mocked sockets. Install it through sys.modules
# before importing the module under test:
#     import fakesock; net = fakesock.install()
#     net.script("example.com", 443, [b"HTTP/1.1 304 Not Modified\r\n\r\n"])
# Every byte a socket sends is recorded (net.sent(host, port)); replies are played from the
# script, one item per recv call: bytes, an exception instance to raise, or None for EOF.
import sys

AF_INET = 2
SOCK_STREAM = 1
IPPROTO_TCP = 6
SOL_SOCKET = 1
SO_REUSEADDR = 4


class Network:
    def __init__(self):
        self.scripts = {}
        self.sockets = []
        self.resolve_fail = set()
        self.refuse = set()

    def script(self, host, port, replies):
        self.scripts[(host, port)] = list(replies)

    def sent(self, host=None, port=None):
        return b"".join(
            bytes(s.out) for s in self.sockets if host is None or s.peer == (host, port)
        )


net = Network()


class FakeSocket:
    def __init__(self, *args):
        self.out = bytearray()
        self.replies = []
        self.pending = b""
        self.peer = None
        self.timeout = None
        self.closed = False
        net.sockets.append(self)

    def settimeout(self, t):
        self.timeout = t

    def setblocking(self, flag):
        self.timeout = None if flag else 0

    def setsockopt(self, *args):
        pass

    def connect(self, addr):
        host, port = addr
        if (host, port) in net.refuse:
            raise OSError(111)  # ECONNREFUSED
        self.peer = (host, port)
        self.replies = list(net.scripts.get((host, port), ()))

    def _next(self):
        while not self.pending:
            if not self.replies:
                return b""
            item = self.replies.pop(0)
            if item is None:
                return b""
            if isinstance(item, Exception):
                raise item
            self.pending = bytes(item)
        return self.pending

    def recv(self, n):
        data = self._next()
        out, self.pending = data[:n], data[n:]
        return out

    read = recv

    def readinto(self, buf, n=None):
        n = len(buf) if n is None else n
        data = self.recv(n)
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        line = b""
        while not line.endswith(b"\n"):
            c = self.recv(1)
            if not c:
                break
            line += c
        return line

    def send(self, data):
        if self.closed:
            raise OSError(9)
        self.out += data
        return len(data)

    write = send

    def sendall(self, data):
        self.send(data)

    def close(self):
        self.closed = True


socket = FakeSocket


def getaddrinfo(host, port, *args):
    if host in net.resolve_fail:
        raise OSError(-2)  # what lwIP and unix report for an unknown name
    return [(AF_INET, SOCK_STREAM, IPPROTO_TCP, "", (host, port))]


def install():
    """Put this module in place of `socket`; returns the Network to script and inspect."""
    global net
    net = Network()
    sys.modules["socket"] = sys.modules[__name__]
    return net


class ReplyStream:
    """A connected stream as a transport's `connect` returns it: plays `reply`, records what
    is written, and says whether TLS was verified."""

    def __init__(self, reply, verified=True):
        self.reply = reply
        self.verified = verified
        self.sent = bytearray()

    def write(self, data):
        self.sent += data
        return len(data)

    def readinto(self, buf):
        n = min(len(buf), len(self.reply))
        buf[:n] = self.reply[:n]
        self.reply = self.reply[n:]
        return n

    def close(self):
        pass
