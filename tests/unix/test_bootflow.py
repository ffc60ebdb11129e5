# What boot.py decides: the watchdog armed first, the reset cause, config mode from the saved
# flag or from the mode button held at power-on (4 to 10 s), a call home from a short hold.
import json
import os

from ias import bootflow
from ias.board_unix import VirtualBoard

HOST = "/tmp/ias_bootflow_test"
STATE = HOST + "/state.json"


class Board(VirtualBoard):
    watchdog_ms = 60000

    def __init__(self, run):
        try:
            os.mkdir(HOST)
        except OSError:
            pass
        with open(HOST + "/board.json", "w") as f:
            json.dump({"chip": "esp8266"}, f)  # no OTA slots to look at
        with open(HOST + "/run.json", "w") as f:
            json.dump(run, f)
        super().__init__(HOST)
        self.armed = None
        self.patterns = []

    def start_watchdog(self, ms):
        self.armed = ms

    def led_pattern(self, name):
        self.patterns.append(name)


def _decide(run, saved=None):
    try:
        os.remove(STATE)
    except OSError:
        pass
    if saved is not None:
        with open(STATE, "w") as f:
            json.dump(saved, f)
    b = Board(run)
    return b, bootflow.run(b, STATE, HOST)


def test_watchdog_armed_and_cause_recorded():
    b, d = _decide({"cause": "watchdog"})
    assert b.armed == 60000
    assert d["cause"] == "watchdog" and d["mode"] == "normal" and d["board"] is b


def test_button_held_seven_seconds_means_config_mode():
    b, d = _decide({"hold_button": 7})
    assert d["mode"] == "config"
    assert "long" in b.patterns  # the LED said what a release would do


def test_short_hold_calls_home_and_very_long_cancels():
    assert _decide({"hold_button": 2})[1]["mode"] == "callhome"
    assert _decide({"hold_button": 12})[1]["mode"] == "normal"


def test_saved_config_flag_wins():
    assert _decide({}, {"mode": "config"})[1]["mode"] == "config"
