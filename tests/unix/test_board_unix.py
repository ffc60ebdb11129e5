# The virtual board's clock, NTP sanity, button, Wi-Fi and reset cause, from its host folder.
import json
import os

from ias import board
from ias.board_unix import VirtualBoard

HOST = "/tmp/ias_vboard_test"


def _board(hw, run=None):
    try:
        os.mkdir(HOST)
    except OSError:
        pass
    with open(HOST + "/board.json", "w") as f:
        json.dump(hw, f)
    with open(HOST + "/run.json", "w") as f:
        json.dump(run or {}, f)
    return VirtualBoard(HOST)


def test_clock_starts_in_2000_until_ntp_answers():
    b = _board({"ntp": "host"})
    assert b.time() < 946684800 + 3600
    assert not board.clock_is_sane(b.time())
    assert b.sync_clock() is True
    assert board.clock_is_sane(b.time())


def test_absurd_ntp_answers_are_refused():
    for answer in (0, 946684800, board.BUILD_TIME - 1, board.BUILD_TIME + 40 * 365 * 86400):
        b = _board({"ntp": answer})
        assert b.sync_clock() is False, answer
        assert not b.clock_synced


def test_time_floor_rejects_an_ntp_answer_before_it():
    b = _board({"ntp": board.BUILD_TIME + 1000})
    assert b.sync_clock(floor=board.BUILD_TIME + 5000) is False
    assert b.sync_clock(floor=board.BUILD_TIME) is True


def test_no_ntp_answer_leaves_clock_unset():
    b = _board({"ntp": None})
    assert b.sync_clock() is False


def test_button_held_at_power_on_then_released():
    b = _board({}, {"hold_button": 7})
    assert b.button_pressed()
    b.sleep_ms(6900)
    assert b.button_pressed()
    b.sleep_ms(200)
    assert not b.button_pressed()


def test_scripted_presses():
    b = _board({}, {"presses": [[2, 1]]})
    assert not b.button_pressed()
    b.sleep_ms(2100)
    assert b.button_pressed()
    b.sleep_ms(1000)
    assert not b.button_pressed()


def test_wifi_joins_only_a_network_in_range_with_its_password():
    b = _board({"networks": [{"ssid": "lab", "password": "secret123"}]})
    assert b.wifi_connect([{"ssid": "lab", "password": "wrong-pass"}]) is None
    assert b.wifi_connect([{"ssid": "other", "password": "secret123"}]) is None
    assert b.wifi_connect([{"ssid": "x"}, {"ssid": "lab", "password": "secret123"}]) == "127.0.0.1"


def test_ids_and_reset_cause():
    b = _board({"mac": "24:0A:C4:01:02:03", "chip": "esp8266"}, {"cause": "watchdog"})
    assert b.mac() == "24:0A:C4:01:02:03"
    assert b.chip_id() == 0x01C40A24
    assert b.reset_cause() == "watchdog"
    assert b.tls_verifies is False
    assert b.running_partition() is None
