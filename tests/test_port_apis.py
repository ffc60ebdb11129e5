"""What the firmware calls on each chip exists on that chip: pyright reads the modules that ship to
the ESP32 and to the ESP8266 against each port's API stubs (tools/portcheck.py). The virtual board
is the unix port, which has every builtin module, so this is where a call the chip lacks shows.

Each port's run also holds a deliberately wrong module beside the real ones (one pyright run per
port): every line marked `# wrong:` there must be reported with that text, and nothing else in it,
so the check is shown to fail on a call that does not exist on the port."""

import re

import pytest

from tools import portcheck

# Wrong on the port named first; the `# wrong:` text must appear in what is reported for the line.
WRONG = {
    "esp32": """
import machine
import time
from esp32 import Partition


def calls(pin):
    machine.Pin.nonexistent()  # wrong: attribute "nonexistent" for class "type[Pin]"
    Partition.bogus  # wrong: attribute "bogus" for class "type[Partition]"
    machine.Pin(0, bogus=1)  # wrong: No parameter named "bogus"
    time.ticks_ms(5)  # wrong: Expected 0 positional arguments
    machine.nothing_here  # wrong: "nothing_here" is not a known attribute of module "machine"
    try:
        machine.Pin.probed()  # the firmware probing for a feature: not reported
    except AttributeError:
        pass
    if hasattr(machine, "lightsleep2"):
        machine.lightsleep2()  # probed too: not reported
    return machine.Pin(0, machine.Pin.IN).value()
""",
    "esp8266": """
import hashlib
import time


def calls():
    import esp32  # wrong: Import "esp32" could not be resolved
    from tls import CERT_REQUIRED  # wrong: "CERT_REQUIRED" is unknown import symbol

    hashlib.md5()  # wrong: "md5" is not a known attribute of module "hashlib"
    time.ticks_ms(5)  # wrong: Expected 0 positional arguments
    try:
        from hashlib import md5  # the firmware probing for a feature: not reported
    except ImportError:
        md5 = None
    return esp32, CERT_REQUIRED, md5, hashlib.sha256(b"").digest()
""",
}
WRONG_NAME = "ias/wrong_calls.py"


@pytest.fixture(scope="module", params=portcheck.PORTS)
def diagnosis(request, tmp_path_factory):
    port = request.param
    wrong = tmp_path_factory.mktemp(port) / "wrong_calls.py"
    wrong.write_text(WRONG[port])
    return portcheck.Diagnosis(port, extra={WRONG_NAME: wrong})


def _wrong_lines(port):
    """{line: text pyright must report there} of the port's deliberately wrong module."""
    found = (re.search(r"# wrong: (.*)$", s) for s in WRONG[port].splitlines())
    return {n: m.group(1) for n, m in enumerate(found, 1) if m}


def _real(findings):
    return [f for f in findings if f[0] != WRONG_NAME]


def test_firmware_calls_only_what_the_port_has(diagnosis):
    findings, unused = diagnosis.findings()
    shown = "\n".join("%s:%d: %s" % f for f in _real(findings))
    assert not _real(findings), "calls %s does not have:\n%s" % (diagnosis.port, shown)
    # An entry of the allow-list that no longer matches anything must go (the list stays short).
    assert not unused, "allow-list entries that match nothing on %s: %r" % (diagnosis.port, unused)


def test_a_call_the_port_lacks_is_reported(diagnosis):
    expected = _wrong_lines(diagnosis.port)
    assert len(expected) >= 4
    got = {}
    for rel, line, msg in diagnosis.findings()[0]:
        if rel == WRONG_NAME:
            got.setdefault(line, []).append(msg)
    assert sorted(got) == sorted(expected), got
    for line, text in expected.items():
        assert any(text in msg for msg in got[line]), (line, text, got[line])


def test_an_allow_list_entry_hides_only_its_own_finding(diagnosis):
    # Allowing one wrong line hides that line alone; an entry matching nothing is returned unused.
    line, text = min(_wrong_lines(diagnosis.port).items())
    mine = (diagnosis.port, "wrong_calls.py", text, "test")
    stale = (None, "wrong_calls.py", "no such message", "test")
    before = [f for f in diagnosis.findings()[0] if f[0] == WRONG_NAME]
    after, unused = diagnosis.findings(allowed=portcheck.ALLOWED + (mine, stale))
    after = [f for f in after if f[0] == WRONG_NAME]
    assert [f for f in before if f[1] != line] == after
    assert stale in unused and mine not in unused
