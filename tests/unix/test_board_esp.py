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


sys.modules["machine"] = _Machine
sys.modules["network"] = _Network

from ias import board  # noqa: E402
from ias.board_esp32 import Esp32Board  # noqa: E402
from ias.board_esp8266 import Esp8266Board  # noqa: E402


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
