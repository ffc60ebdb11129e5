# The time floor (design §1 rule 7, §5 step 1): a time the device knows has passed because an
# authenticated source said so, the Date of a response from a TLS peer verified with the anchors
# or the issue time of a signed document that verified. NTP sets the clock, never the floor:
# one lying NTP answer must not lock the device out of its own later, honest clock. When the
# clock makes verified TLS fail on time, NTP is asked again and, if it says the same, the device
# tries the floor instead, kept only while verified TLS works with it.
from . import board as board_mod
from . import log
from .reason import const, days_from_civil

KEY = "time_floor"
WRITE_STEP_S = const(86400)  # the floor is persisted at most once a day (flash wear)
MOVED_S = const(3600)  # a second NTP answer this far from the clock is a different answer
# verified TLS failures that the clock can cause
TIME_FAULTS = ("expired", "not_yet_valid", "clock_unset")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def floor(state):
    """The persisted floor (Unix seconds), 0 when none."""
    f = state.get(KEY, 0) if state is not None else 0
    return f if isinstance(f, int) else 0


def parse_http_date(text):
    """Unix seconds of an HTTP date (IMF-fixdate: 'Sun, 06 Nov 1994 08:49:37 GMT'), or None."""
    try:
        parts = text.split()
        if len(parts) != 6 or parts[5] != "GMT" or parts[2] not in _MONTHS:
            return None
        day, year = int(parts[1]), int(parts[3])
        hh, mm, ss = [int(x) for x in parts[4].split(":")]
    except (ValueError, AttributeError):
        return None
    if not (1 <= day <= 31 and 0 <= hh < 24 and 0 <= mm < 60 and 0 <= ss < 61 and year >= 1970):
        return None
    mon = _MONTHS.index(parts[2]) + 1
    return days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss


def confirm(state, board, t):
    """An authenticated source says it is `t` (Unix seconds). A clock running on the floor
    takes it; the floor advances to the earlier of `t` and the clock, so a verified server with
    a wrong clock cannot push it past honest NTP either. True when the floor was written."""
    if state is None or not isinstance(t, int) or not board_mod.clock_is_sane(t):
        return False
    if getattr(board, "clock_fallback", False):
        if t > board.time() and _adopt(board, t):
            log.info("clock", "clock set from a verified time: %d" % t)
        board.clock_fallback = False
    if getattr(board, "clock_synced", False):
        now = board.time()
        t = t if t < now else now
    if t - floor(state) < WRITE_STEP_S:
        return False
    return state.set(KEY, t)


def recheck(board, state):
    """After verified TLS failed on time (TIME_FAULTS): ask NTP again; when it answers what
    it said before (or nothing sane) and a floor is known, run the clock from the floor.
    True when the clock changed, so a retry may succeed."""
    f = floor(state)
    before = board.time() if board.clock_synced else None
    if board.sync_clock(f) and not board.clock_fallback:  # an accepted answer ends a fallback
        if before is None or abs(board.time() - before) > MOVED_S:
            log.info("clock", "NTP asked again: %d" % board.time())
            return True
    if not f or board.clock_fallback:
        return False
    if board.clock_synced and abs(board.time() - f) <= MOVED_S:
        return False  # the clock already reads the floor
    if not _adopt(board, f):
        return False
    board.clock_fallback = True
    log.warn("clock", "NTP time distrusted: trying the confirmed floor %d" % f)
    return True


def give_up_floor(board, state):
    """The floor did not make verified TLS work either: back to NTP's answer (if sane)."""
    if board.clock_fallback:
        board.clock_fallback = False
        board.sync_clock(floor(state))


def _adopt(board, t):
    try:
        board.adopt_time(t)
    except Exception as e:  # an RTC refusing the time: the clock stays as it was
        log.warn("clock", "not set: %r" % (e,))
        return False
    return True
