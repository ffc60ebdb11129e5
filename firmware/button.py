# The mode button as IAS times it (ias-protocol §4.1): released after 0.5 to 4 s calls home,
# held 4 to 10 s enters config mode (so "hold it 7 to 8 seconds" works), over 10 s cancels,
# under 0.5 s does nothing. The LED changes at each threshold, so the person holding the button
# sees what letting go will do.
from micropython import const

SHORT_MS = const(500)
LONG_MS = const(4000)
CANCEL_MS = const(10000)
DEBOUNCE_MS = const(50)
STUCK_MS = const(CANCEL_MS + 5000)  # held this long from power-on: a stuck button
_WAIT_STEP_MS = const(10)

CALLHOME = "callhome"
CONFIG = "config"
CANCEL = "cancel"


def action_for(held_ms):
    """The action a release after `held_ms` of holding asks for, or None."""
    if held_ms < SHORT_MS:
        return None
    if held_ms < LONG_MS:
        return CALLHOME
    if held_ms < CANCEL_MS:
        return CONFIG
    return CANCEL


def _pattern_for(held_ms):
    act = action_for(held_ms)
    if act == CALLHOME:
        return "short"
    if act == CONFIG:
        return "long"
    if act == CANCEL:
        return "cancel"
    return "off"


class Button:
    """Debounced mode button. `pressed()` reads the pin (True while held), `ticks_ms()` is the
    clock, `led(name)` shows a pattern (board.led_pattern)."""

    def __init__(self, pressed, ticks_ms, ticks_diff, led=None):
        self._pressed = pressed
        self._now = ticks_ms
        self._diff = ticks_diff
        self._led = led
        self.held = False  # the debounced state
        self._raw = False  # the last raw reading
        self._raw_since = ticks_ms()  # when the raw reading last changed
        self._down_at = 0  # when the debounced press began (its first raw edge)
        self._shown = "off"

    def _show(self, name):
        if name != self._shown:
            self._shown = name
            if self._led is not None:
                self._led(name)

    def poll(self):
        """Read the pin once; returns 'callhome', 'config' or 'cancel' when a press ends."""
        now = self._now()
        raw = bool(self._pressed())
        if raw != self._raw:
            self._raw = raw
            self._raw_since = now
        stable = self._diff(now, self._raw_since) >= DEBOUNCE_MS
        if stable and raw != self.held:
            self.held = raw
            if raw:
                self._down_at = self._raw_since
                return None
            # Timed edge to edge (the edges that settled), so waiting out the bounce adds nothing.
            act = action_for(self._diff(self._raw_since, self._down_at))
            self._show("off")
            return act
        if self.held:
            self._show(_pattern_for(self._diff(now, self._down_at)))
        return None

    def wait_release(self, sleep_ms):
        """Block while the button is held (boot.py at power-on). Returns the action of the
        release, or None when it was not held. A button stuck down for STUCK_MS gives 'cancel'."""
        start = self._now()
        while True:
            act = self.poll()
            if act is not None:
                return act
            if not self.held and not self._raw:
                if self._diff(self._now(), self._raw_since) >= DEBOUNCE_MS:
                    return None  # released (or never pressed) and settled
            if self._diff(self._now(), start) >= STUCK_MS:
                self._show("off")
                return CANCEL
            sleep_ms(_WAIT_STEP_MS)
