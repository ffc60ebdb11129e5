# The time floor (timefloor.py): authenticated time only, NTP asked again or distrusted for the
# floor after a time-shaped TLS failure, HTTP dates parsed. On a virtual board with scripted NTP.
import json
import os

from ias import board, state, timefloor
from ias.board_unix import VirtualBoard

HOST = "/tmp/ias_timefloor_test"
STATE = HOST + "/state.json"
DAY = 86400
YEAR = 365 * DAY


def _board(ntp):
    try:
        os.mkdir(HOST)
    except OSError:
        pass
    for name, data in (("board.json", {"ntp": ntp}), ("run.json", {})):
        with open(HOST + "/" + name, "w") as f:
            json.dump(data, f)
    try:
        os.remove(STATE)
    except OSError:
        pass
    return VirtualBoard(HOST), state.State(STATE)


def _honest():
    b, _ = _board("host")
    return b.ntp_time()


def test_parse_http_date():
    assert timefloor.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert timefloor.parse_http_date("Wed, 02 Dec 2026 16:00:00 GMT") == 1796227200
    for bad in ("", "garbage", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 32 Nov 1994 08:49:37 GMT",
                "Sun, 06 Now 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49 GMT", None):  # fmt: skip
        assert timefloor.parse_http_date(bad) is None, bad


def test_floor_is_the_earlier_of_the_confirmed_time_and_the_clock():
    now = _honest()
    b, st = _board(now + 2 * DAY)  # NTP two days ahead; certificates would still verify
    assert b.sync_clock(timefloor.floor(st))
    assert timefloor.confirm(st, b, now)  # the verified server's Date
    assert timefloor.floor(st) == now
    b2, st2 = _board("host")
    assert b2.sync_clock()
    assert timefloor.confirm(st2, b2, now + 10 * YEAR)  # a verified server with a wrong clock
    assert timefloor.floor(st2) <= b2.time()
    assert not timefloor.confirm(st2, b2, b2.time() + 60)  # within a day: no flash write
    assert not timefloor.confirm(st2, b2, board.BUILD_TIME - 1)  # before the build: no time


def test_a_lie_below_the_floor_is_refused_then_the_floor_carries_the_clock():
    now = _honest()
    b, st = _board(board.BUILD_TIME + 10)
    st.set("time_floor", now - DAY)
    assert not b.sync_clock(timefloor.floor(st))  # before the confirmed floor: refused
    assert timefloor.recheck(b, st)  # NTP says the same: the floor instead
    assert b.clock_fallback and b.clock_synced and abs(b.time() - (now - DAY)) < 60
    assert not timefloor.recheck(b, st)  # already on the floor: nothing new to try
    assert timefloor.confirm(st, b, now)  # the verified server's Date sets the clock
    assert not b.clock_fallback and abs(b.time() - now) < 60


def test_ntp_ten_years_ahead_is_asked_again_then_distrusted():
    now = _honest()
    b, st = _board(now + 10 * YEAR)
    assert b.sync_clock(0) and b.time() > now + 9 * YEAR  # believed: nothing contradicts it
    assert not timefloor.recheck(b, st)  # the same lie, no floor: nothing else to try
    st.set("time_floor", now - DAY)
    assert timefloor.recheck(b, st)
    assert b.clock_fallback and b.time() < now
    timefloor.give_up_floor(b, st)  # the floor did not work either: back to NTP's answer
    assert not b.clock_fallback and b.time() > now + 9 * YEAR
    b.hw["ntp"] = "host"  # honest time returns
    assert timefloor.recheck(b, st) and not b.clock_fallback
    assert abs(b.time() - now) < 60
