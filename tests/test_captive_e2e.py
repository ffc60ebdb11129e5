"""The captive portal as a phone meets it, on a virtual board booted from its flash: with no
Wi-Fi it enters config mode by itself; the phone's DNS query for its probe host is answered
with the access point's address, the probe gets a 302 to the page, the page is served, and
GET /log shows the device's last log lines. The board's DNS port is set in board.json (53 on
hardware)."""

import http.client
import json
import socket
import struct
import time

from tests.test_sim_config import _boot, _free_port, _get, _power_off
from tools import cli


def _free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dns_a(port, name, timeout=30):
    """Ask 127.0.0.1:port for the A record of `name`, retrying until the board serves."""
    q = struct.pack(">HHHHHH", 0x5157, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0\0\1\0\1"
    end = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        while time.monotonic() < end:
            s.sendto(q, ("127.0.0.1", port))
            try:
                reply = s.recv(512)
            except OSError:
                continue
            assert reply[:2] == q[:2] and struct.unpack(">H", reply[6:8])[0] == 1
            return socket.inet_ntoa(reply[-4:])
    raise AssertionError("no DNS answer on port %d" % port)


def test_phone_finds_the_config_page_by_itself(tmp_path):
    port, dns_port = _free_port(), _free_udp_port()
    board = tmp_path / "dev"
    args = ["sim", "init", str(board), "--config-port", str(port), "--no-wifi"]
    assert cli.main(args + ["--server", "https://127.0.0.1:9"]) == 0
    hw = json.loads((board / "board.json").read_text())
    hw["dns_port"] = dns_port
    (board / "board.json").write_text(json.dumps(hw))
    proc = _boot(board)
    try:
        _get(port, "/i")  # config mode is up
        assert dns_a(dns_port, "connectivitycheck.gstatic.com") == "127.0.0.1"
        assert dns_a(dns_port, "captive.apple.com") == "127.0.0.1"
        for probe in ("/generate_204", "/hotspot-detect.html", "/connecttest.txt"):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", probe, headers={"Host": "connectivitycheck.gstatic.com"})
            r = c.getresponse()
            assert (r.status, r.getheader("Location")) == (302, "http://127.0.0.1:%d/" % port)
            c.close()
        status, page = _get(port, "/")
        assert status == 200 and b"<html" in page.lower()
        status, body = _get(port, "/log")
        lines = json.loads(body)["lines"]
        assert any("no saved Wi-Fi network could be joined" in ln for ln in lines), lines
    finally:
        _power_off(proc)
        proc.communicate(timeout=60)
