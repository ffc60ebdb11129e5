# The captive portal's DNS server (captive.py) over real UDP on loopback, inside the unix port:
# every name gets the access point's address, other types get no records, and malformed or
# hostile packets are dropped without an answer and without stopping the server.
import os
import socket
import time

from ias import captive

AP = "192.168.4.1"


def _port():
    return 20000 + int.from_bytes(os.urandom(2), "little") % 30000


def query(name, qtype=1, ident=0xBEEF, flags=0x0100, extra=b""):
    q = bytes((ident >> 8, ident & 0xFF, flags >> 8, flags & 0xFF, 0, 1, 0, 0, 0, 0, 0, 0))
    for label in name.split("."):
        q += bytes((len(label),)) + label.encode()
    return q + bytes((0, 0, qtype, 0, 1)) + extra


class Peer:
    """A server on a random port and a client socket talking to it."""

    def __init__(self):
        self.port = _port()
        self.server = captive.Server(AP, self.port, host="127.0.0.1")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.addr = socket.getaddrinfo("127.0.0.1", self.port)[0][-1]

    def ask(self, pkt):
        """Send `pkt`, let the server poll, return its reply or None."""
        self.sock.sendto(pkt, self.addr)
        for _ in range(20):
            self.server.poll()
            try:
                return self.sock.recv(600)
            except OSError:
                time.sleep_ms(5)
        return None

    def close(self):
        self.sock.close()
        self.server.close()


def _u16(b, i):
    return (b[i] << 8) | b[i + 1]


def test_every_name_gets_the_ap_address():
    p = Peer()
    try:
        for name in ("connectivitycheck.gstatic.com", "captive.apple.com", "a", "x" * 63 + ".io"):
            q = query(name)
            r = p.ask(q)
            assert r is not None, name
            assert r[:2] == q[:2]  # same id
            assert r[2] & 0x80 and r[2] & 0x01  # a response, RD kept
            assert r[3] & 0x0F == 0  # NOERROR
            assert _u16(r, 4) == 1 and _u16(r, 6) == 1  # one question, one answer
            assert r[12 : len(q)] == q[12:]  # the question echoed
            ans = r[len(q) :]
            assert ans[:2] == b"\xc0\x0c"  # the name: a pointer to the question
            assert _u16(ans, 2) == 1 and _u16(ans, 4) == 1  # A, IN
            assert _u16(ans, 10) == 4 and ans[12:] == bytes((192, 168, 4, 1))
        assert p.server.answered == 4
    finally:
        p.close()


def test_aaaa_gets_no_records_and_edns_is_dropped():
    p = Peer()
    try:
        r = p.ask(query("example.com", qtype=28))
        assert r is not None and _u16(r, 6) == 0 and r[3] & 0x0F == 0
        opt = b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00"  # an EDNS OPT record
        q = query("example.com")
        q = q[:11] + b"\x01" + q[12:] + opt  # ARCOUNT 1
        r = p.ask(q)
        assert r is not None and _u16(r, 10) == 0 and r[-4:] == bytes((192, 168, 4, 1))
    finally:
        p.close()


def test_malformed_packets_are_dropped_and_the_server_goes_on():
    p = Peer()
    good = query("ias.local")
    bad = [
        b"",
        b"\x12",
        good[:11],  # a cut header
        good[:-3],  # a cut question
        query("ias.local", flags=0x8100),  # a response, not a query
        query("ias.local", flags=0x2800),  # opcode 5 (update)
        good[:5] + b"\x02" + good[6:],  # two questions announced
        good[:12] + b"\xc0\x0c" + good[-4:],  # a compression pointer in the question
        good[:12] + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # a 64-byte label
        good[:12] + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # a 320-byte name
        good[:12] + b"\x05abc",  # a label running off the end
        os.urandom(600),
    ]
    try:
        for pkt in bad:
            assert p.ask(pkt) is None, pkt
        r = p.ask(good)  # still serving
        assert r is not None and r[-4:] == bytes((192, 168, 4, 1))
        assert p.server.answered == 1
    finally:
        p.close()


def test_answer_is_built_in_the_callers_buffer():
    buf = bytearray(captive.MAX_PACKET)
    q = query("a.b")
    n = captive.answer(q, len(q), bytes((10, 0, 0, 1)), buf)
    assert n == len(q) + 16 and bytes(buf[n - 4 : n]) == bytes((10, 0, 0, 1))
    small = bytearray(len(q) + 8)  # no room for the answer: dropped, nothing overflows
    assert captive.answer(q, len(q), bytes((10, 0, 0, 1)), small) == 0


def test_bad_ap_address_refused():
    for ip in ("192.168.4", "1.2.3.4.5"):
        try:
            captive.Server(ip, _port(), host="127.0.0.1")
        except ValueError:
            continue
        raise AssertionError("accepted %s" % ip)
