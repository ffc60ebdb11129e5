# When to call home: at boot, then every interval with +-10% jitter (so a fleet does not call in
# step), exponential backoff after failures, the server's Retry-After, and at once on a short
# press of the mode button. Pure logic: the clock (ms ticks) and the random source are injected.
from time import ticks_diff

from micropython import const

DEFAULT_INTERVAL = const(7200)
BACKOFF_START = const(60)
JITTER = 0.1
MAX_RETRY_AFTER = const(86400)  # a server cannot silence a device for longer than a day


def _random():
    import random

    return random.getrandbits(16) / 65536


class Schedule:
    """poll() says why a call home is due now ("boot", "button", "interval", "retry") or None;
    after each call home, done(outcome, retry_after) plans the next one."""

    def __init__(self, interval_s, clock, rand=None):
        self.clock = clock
        self.rand = rand or _random
        self.interval_s = interval_s
        self.failures = 0
        self.forced = False
        self._last = self.clock()
        self._t = 0  # ms since start as an unbounded int: ticks wrap, long intervals do not
        self._due = 0  # at boot
        self._why = "boot"

    def _now(self):
        # Accumulate elapsed ticks; poll() runs every loop, far inside the ticks wrap period.
        now = self.clock()
        self._t += ticks_diff(now, self._last)
        self._last = now
        return self._t

    def _period_s(self):
        # interval 0 turns periodic calls off; retries still use the default interval as cap
        return self.interval_s if self.interval_s > 0 else None

    def _plan(self, seconds, at_least=False):
        # +-10% jitter; only upwards when the server said "not before" (Retry-After)
        if seconds is None:
            return None
        span = seconds * 1000
        r = self.rand() if at_least else 2 * self.rand() - 1
        jitter = span * JITTER * r
        return self._now() + int(span + jitter)

    def press(self):
        """A short press of the mode button: call home now, whatever the backoff says."""
        self.forced = True

    def poll(self):
        now = self._now()
        if self.forced:
            return "button"
        if self._due is not None and now >= self._due:
            return self._why
        return None

    def backoff_s(self):
        cap = self.interval_s if self.interval_s > 0 else DEFAULT_INTERVAL
        delay = BACKOFF_START << (self.failures - 1 if self.failures < 20 else 19)
        return delay if delay < cap else cap

    def done(self, outcome, retry_after=None):
        """Record a call home's outcome ("error" counts as a failure) and plan the next."""
        self.forced = False
        if outcome == "error":
            self.failures += 1
            seconds = self.backoff_s()
            self._why = "retry"
        else:
            self.failures = 0
            seconds = self._period_s()
            self._why = "interval"
        at_least = False
        if retry_after is not None and retry_after > 0:
            wait = retry_after if retry_after < MAX_RETRY_AFTER else MAX_RETRY_AFTER
            if seconds is None or wait >= seconds:
                seconds = wait
                self._why = "retry"
            at_least = True  # never before Retry-After, whatever the jitter
        self._due = self._plan(seconds, at_least)

    def next_in_ms(self):
        """ms until the next planned call (0 when due), or None when none is planned."""
        if self.forced:
            return 0
        if self._due is None:
            return None
        left = self._due - self._now()
        return left if left > 0 else 0
