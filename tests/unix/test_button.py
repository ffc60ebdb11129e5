# The mode button: every IAS threshold, the LED at each one, debouncing, the blocking boot wait.
from ias import button


class Clock:
    def __init__(self):
        self.t = 1000

    def ticks_ms(self):
        return self.t

    def sleep_ms(self, ms):
        self.t += ms


class Pin:
    """A scripted pin: a list of (from_ms, pressed) steps, relative to the clock's start."""

    def __init__(self, clock, steps):
        self.clock = clock
        self.t0 = clock.t
        self.steps = steps

    def __call__(self):
        state = False
        for at, pressed in self.steps:
            if self.clock.t - self.t0 >= at:
                state = pressed
        return state


def _diff(a, b):
    return a - b  # the fake clock never wraps


def _make(steps):
    clock = Clock()
    leds = []
    b = button.Button(Pin(clock, steps), clock.ticks_ms, _diff, leds.append)
    return clock, b, leds


def _run(clock, b, until_ms, step=5):
    """Poll every `step` ms until `until_ms`; returns [(time, action)] of completed presses."""
    out = []
    end = clock.t + until_ms
    while clock.t < end:
        act = b.poll()
        if act is not None:
            out.append((clock.t, act))
        clock.sleep_ms(step)
    return out


def _press(length_ms):
    return [(100, True), (100 + length_ms, False)]


def test_action_for_thresholds():
    assert button.action_for(0) is None
    assert button.action_for(499) is None
    assert button.action_for(500) == "callhome"
    assert button.action_for(3999) == "callhome"
    assert button.action_for(4000) == "config"
    assert button.action_for(7500) == "config"
    assert button.action_for(9999) == "config"
    assert button.action_for(10000) == "cancel"


def test_tap_under_half_second_does_nothing():
    clock, b, leds = _make(_press(300))
    assert _run(clock, b, 2000) == []
    assert leds == []  # never reached a threshold: the LED was not touched


def test_short_press_calls_home():
    clock, b, leds = _make(_press(1500))
    acts = _run(clock, b, 3000)
    assert [a for _, a in acts] == ["callhome"]
    assert leds == ["short", "off"]


def test_seven_seconds_enters_config():
    clock, b, leds = _make(_press(7500))
    acts = _run(clock, b, 9000)
    assert [a for _, a in acts] == ["config"]
    assert leds == ["short", "long", "off"]


def test_over_ten_seconds_cancels():
    clock, b, leds = _make(_press(12000))
    acts = _run(clock, b, 14000)
    assert [a for _, a in acts] == ["cancel"]
    assert leds == ["short", "long", "cancel", "off"]


def test_edges_either_side_of_thresholds():
    for length, want in (
        (450, None),
        (560, "callhome"),
        (3940, "callhome"),
        (4060, "config"),
        (9940, "config"),
        (10060, "cancel"),
    ):
        clock, b, _ = _make(_press(length))
        acts = [a for _, a in _run(clock, b, length + 1000)]
        assert acts == ([want] if want else []), (length, acts)


def test_led_changes_while_held():
    clock, b, leds = _make([(100, True)])
    _run(clock, b, 100 + 600)
    assert leds == ["short"]
    _run(clock, b, 3500)
    assert leds == ["short", "long"]
    assert b.held
    _run(clock, b, 6000)
    assert leds == ["short", "long", "cancel"]


def test_action_reported_once_after_debounce():
    clock, b, _ = _make(_press(1000))
    acts = _run(clock, b, 3000, step=1)
    assert len(acts) == 1
    t, act = acts[0]
    # the release edge is at clock start + 1100; the action comes 50 ms later (debounced)
    assert act == "callhome"
    assert 1000 + 1100 + 50 <= t <= 1000 + 1100 + 52


def test_bounces_on_press_and_release_count_as_one_press():
    steps = [
        (100, True),
        (103, False),
        (108, True),
        (112, False),
        (120, True),  # press bounce
        (1600, False),
        (1604, True),
        (1609, False),
        (1615, True),
        (1620, False),
    ]
    clock, b, _ = _make(steps)
    acts = [a for _, a in _run(clock, b, 3000, step=1)]
    assert acts == ["callhome"]


def test_glitch_shorter_than_debounce_is_ignored():
    clock, b, leds = _make([(100, True), (130, False)])
    assert _run(clock, b, 2000, step=1) == []
    assert not b.held and leds == []


def test_release_glitch_does_not_split_a_long_press():
    # a 20 ms dropout in the middle of a 6 s hold: still one press, config mode
    steps = [(100, True), (3000, False), (3020, True), (6100, False)]
    clock, b, _ = _make(steps)
    acts = [a for _, a in _run(clock, b, 8000, step=2)]
    assert acts == ["config"]


def test_two_presses_in_a_row():
    steps = [(100, True), (1100, False), (2000, True), (7000, False)]
    clock, b, _ = _make(steps)
    acts = [a for _, a in _run(clock, b, 9000)]
    assert acts == ["callhome", "config"]


def test_wait_release_at_power_on():
    clock = Clock()
    pin = Pin(clock, [(0, True), (7200, False)])  # held from power-on, let go at 7.2 s
    leds = []
    b = button.Button(pin, clock.ticks_ms, _diff, leds.append)
    assert b.wait_release(clock.sleep_ms) == "config"
    assert leds[-1] == "off"
    assert 7200 <= clock.t - 1000 <= 7300


def test_wait_release_not_pressed_returns_quickly():
    clock = Clock()
    b = button.Button(Pin(clock, []), clock.ticks_ms, _diff)
    assert b.wait_release(clock.sleep_ms) is None
    assert clock.t - 1000 <= 100


def test_wait_release_stuck_button_gives_cancel():
    clock = Clock()
    b = button.Button(Pin(clock, [(0, True)]), clock.ticks_ms, _diff)
    assert b.wait_release(clock.sleep_ms) == "cancel"
    assert button.STUCK_MS <= clock.t - 1000 <= button.STUCK_MS + 100


def test_tick_wraparound():
    # ticks_ms wraps on the device; with the board's ticks_diff the press still measures right
    period = 1 << 30

    def tdiff(a, b):
        return ((a - b + period // 2) % period) - period // 2

    clock = Clock()
    clock.t = period - 2000
    start = clock.t
    state = {"p": False}
    b = button.Button(lambda: state["p"], lambda: clock.t % period, tdiff)
    acts = []
    for _i in range(2000):  # 10 s in 5 ms steps
        state["p"] = 100 <= clock.t - start < 1600
        a = b.poll()
        if a:
            acts.append(a)
        clock.t += 5
    assert acts == ["callhome"]
