# The captive portal's DNS half: in config mode every name resolves to the access point's
# address, so a phone that joins the AP finds its connectivity probe answered by the config
# app (webapp.py redirects the probes to the page) and opens the page by itself. A UDP socket
# polled from config mode's loop, one buffer for every reply; anything that is not one plain
# query is dropped without an answer.
import socket

from .reason import const

PORT = const(53)
MAX_PACKET = const(512)  # DNS over UDP without EDNS
TTL_S = const(60)
_QTYPE_A = const(1)
_QTYPE_ANY = const(255)
_QCLASS_IN = const(1)


def question_end(pkt, n):
    """Offset just past the one question of query `pkt[:n]`, or None when it is not a plain
    standard query (a reply, another opcode, not exactly one question, a bad name)."""
    if n < 17 or pkt[2] & 0xF8:  # header plus a minimal question; QR=1 or an opcode != 0
        return None
    if pkt[4] != 0 or pkt[5] != 1:  # QDCOUNT must be 1
        return None
    i = 12
    while True:
        if i >= n:
            return None
        size = pkt[i]
        if size == 0:
            break
        if size > 63 or i - 12 + size > 253:  # a pointer or an over-long label/name
            return None
        i += size + 1
    i += 5  # the root label, QTYPE, QCLASS
    return i if i <= n else None


def answer(pkt, n, ip4, buf):
    """Build in `buf` the reply to query `pkt[:n]` naming `ip4` (4 bytes) for an A or ANY
    question in class IN (other types get no records, so a phone asking AAAA falls back to A).
    Returns the reply's length, or 0 to drop the packet."""
    end = question_end(pkt, n)
    if end is None or end + 16 > len(buf):
        return 0
    buf[:end] = pkt[:end]
    qtype = (pkt[end - 4] << 8) | pkt[end - 3]
    qclass = (pkt[end - 2] << 8) | pkt[end - 1]
    buf[2] = 0x80 | (pkt[2] & 0x01)  # a response; keep RD
    buf[3] = 0x80  # RA, NOERROR
    records = 1 if qclass == _QCLASS_IN and qtype in (_QTYPE_A, _QTYPE_ANY) else 0
    buf[6], buf[7] = 0, records  # ANCOUNT
    buf[8] = buf[9] = buf[10] = buf[11] = 0  # no authority, no additional (EDNS dropped)
    if not records:
        return end
    rr = b"\xc0\x0c\x00\x01\x00\x01" + bytes((0, 0, TTL_S >> 8, TTL_S & 0xFF, 0, 4)) + ip4
    buf[end : end + 16] = rr
    return end + 16


class Server:
    """The DNS server on UDP `port`; poll() answers what arrived since the last call."""

    def __init__(self, ip, port=PORT, host="0.0.0.0"):
        self.ip4 = bytes(int(p) for p in ip.split("."))
        if len(self.ip4) != 4:
            raise ValueError("not an IPv4 address: %s" % ip)
        self.buf = bytearray(MAX_PACKET)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        except (AttributeError, OSError):
            pass
        self.sock.bind(socket.getaddrinfo(host, port)[0][-1])
        self.sock.setblocking(False)
        self.answered = 0

    def poll(self, limit=8):
        """Answer up to `limit` waiting queries; never raises for what a client sent."""
        for _ in range(limit):
            try:
                pkt, addr = self.sock.recvfrom(MAX_PACKET)
            except OSError:  # nothing waiting (EAGAIN)
                return
            n = answer(pkt, len(pkt), self.ip4, self.buf)
            if not n:
                continue
            try:
                self.sock.sendto(memoryview(self.buf)[:n], addr)
                self.answered += 1
            except OSError:
                pass

    def close(self):
        self.sock.close()
