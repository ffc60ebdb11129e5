# The ESP32 and ESP8266 boards against fake machine/network modules: reset causes normalised,
# ids formatted as IAS sends them, the LED and button polarity.
import sys


class _Pin:
    IN, OUT, PULL_UP = 1, 2, 3

    def __init__(self, n, mode=None, pull=None):
        self.n = n
        self.v = 1

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v


class _RTC:
    mem = b""
    set_to = None

    def datetime(self, dt):
        _RTC.set_to = dt

    def memory(self, data=None):
        if data is None:
            return _RTC.mem
        _RTC.mem = bytes(data)


class _Machine:
    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
    Pin = _Pin
    RTC = _RTC
    cause = 1
    resets = 0

    @classmethod
    def reset_cause(cls):
        return cls.cause

    @classmethod
    def reset(cls):
        cls.resets += 1

    @staticmethod
    def unique_id():
        return b"\x11\x22\x33\x44"


class _WLAN:
    IF_STA, IF_AP = 0, 1

    def __init__(self, i):
        pass

    def config(self, key):
        return b"\x24\x0a\xc4\x01\x02\x03"


class _Network:
    WLAN = _WLAN


import time as _host_time  # noqa: E402

EPOCH_2000 = 946684800


class _Time2000:
    """The time module of an ESP port: it counts from 2000-01-01 (time.gmtime(0)[0] == 2000);
    `now` is what its clock reads, in those seconds."""

    now = 0

    @staticmethod
    def gmtime(t=None):
        return _host_time.gmtime((_Time2000.now if t is None else t) + EPOCH_2000)

    @staticmethod
    def time():
        return _Time2000.now

    ticks_ms = _host_time.ticks_ms
    ticks_diff = _host_time.ticks_diff
    sleep_ms = _host_time.sleep_ms


class _Ntptime:
    """ntptime as on the board: answers in the port's seconds, or raises what it raises."""

    timeout = 1
    answer = 0

    @classmethod
    def time(cls):
        if isinstance(cls.answer, Exception):
            raise cls.answer
        return cls.answer


sys.modules["machine"] = _Machine
sys.modules["network"] = _Network

from ias import board  # noqa: E402
from ias.board_esp32 import Esp32Board  # noqa: E402
from ias.board_esp8266 import Esp8266Board  # noqa: E402
from ias.reason import iso_date  # noqa: E402


def test_esp32_reset_causes():
    b = Esp32Board()
    for raw, want in (
        (1, board.POWER_ON),
        (3, board.WATCHDOG),
        (4, board.DEEPSLEEP),
        (5, board.SOFT),
        (2, board.CRASH),
        (0, board.UNKNOWN),
    ):
        _Machine.cause = raw
        assert b.reset_cause() == want, (raw, want)


def test_esp32_intended_reset_is_told_from_a_crash():
    b = Esp32Board()
    b.reset()
    _Machine.cause = _Machine.HARD_RESET
    assert b.reset_cause() == board.INTENDED
    assert b.reset_cause() == board.CRASH  # the mark is used once


def test_esp8266_raw_reasons():
    b = Esp8266Board()
    for raw, want in (
        (0, board.POWER_ON),
        (1, board.WATCHDOG),
        (2, board.CRASH),
        (3, board.WATCHDOG),
        (5, board.DEEPSLEEP),
        (6, board.HARD),
    ):
        _Machine.cause = raw
        assert b.reset_cause() == want, (raw, want)
    b.reset()
    _Machine.cause = 4
    assert b.reset_cause() == board.INTENDED


def test_ids_as_ias_sends_them():
    b = Esp32Board()
    assert b.mac() == "24:0A:C4:01:02:03"
    assert b.chip_id() == 0x01C40A24
    assert Esp8266Board().chip_id() == 0x44332211
    assert Esp8266Board().tls_verifies is False
    assert Esp32Board().tls_verifies is True


def test_button_active_low_and_led_polarity():
    b = Esp32Board()
    b._button.v = 0
    assert b.button_pressed()
    b._button.v = 1
    assert not b.button_pressed()
    b.led(True)
    assert b._led.v == 1
    e = Esp8266Board()
    e.led(True)
    assert e._led.v == 0  # the ESP8266 LED on GPIO2 is active low


class _PortEpoch2000:
    """Runs the board as on an ESP port: time from _Time2000 and the offset from its gmtime."""

    def __enter__(self):
        self.was = board.PORT_EPOCH
        board.PORT_EPOCH = board.epoch_of(_Time2000.gmtime)
        sys.modules["time"] = _Time2000
        sys.modules["ntptime"] = _Ntptime
        return self

    def __exit__(self, *exc):
        board.PORT_EPOCH = self.was
        del sys.modules["time"]
        del sys.modules["ntptime"]


def test_one_epoch_offset_from_gmtime():
    assert board.epoch_of(_host_time.gmtime) == 0  # the unix port counts from 1970
    assert board.PORT_EPOCH == 0
    assert board.epoch_of(_Time2000.gmtime) == EPOCH_2000


def test_clock_past_2029_reads_right_on_a_2000_epoch_port():
    # A count from 2000 passes 946684800 on 2029-12-31: a "convert if below" rule read the
    # dates from there on as year 2000. 2030-01-02 00:00 UTC is Unix 1893542400.
    with _PortEpoch2000():
        for unix, day in (
            (1893542400, "2030-01-02"),
            (1893412800, "2029-12-31"),
            (1795000000, "2026-11-18"),
            (EPOCH_2000 + 5, "2000-01-01"),
        ):
            _Time2000.now = unix - EPOCH_2000
            b = Esp32Board()
            assert b.time() == unix, (day, b.time())
            assert iso_date(b.time()) == day
            assert board.port_time(unix) == _Time2000.now
        _Time2000.now = 1893542400 - EPOCH_2000
        b.clock_synced = True
        assert board.trusted_time(b) == 1893542400  # past the build: a sane clock


def test_ntp_sets_the_rtc_through_the_same_offset():
    with _PortEpoch2000():
        b = Esp8266Board()
        _Ntptime.answer = 1893542400 + 3723 - EPOCH_2000  # 2030-01-02 01:02:03 in port seconds
        assert b.ntp_time() == 1893542400 + 3723
        assert b.sync_clock(0) and b.clock_synced
        # RTC.datetime: (year, month, day, weekday 1-7, hours, minutes, seconds, subseconds)
        assert _RTC.set_to == (2030, 1, 2, 3, 1, 2, 3, 0), _RTC.set_to


def test_ntp_faults_are_caught_and_logged():
    # ntptime checks nothing: a short reply raises ValueError, a lost one OSError (timeout).
    # Neither may escape start_network (it would reset the board): the clock stays unset.
    with _PortEpoch2000():
        for fault in (ValueError("buffer too small"), OSError(110), IndexError("x")):
            _Ntptime.answer = fault
            _RTC.set_to = None
            b = Esp32Board()
            assert b.ntp_time() is None
            assert b.sync_clock(0) is False and not b.clock_synced
            assert _RTC.set_to is None
        _Ntptime.answer = 1893542400 - EPOCH_2000
        b = Esp32Board()
        assert b.sync_clock(0)  # the next good answer sets it
