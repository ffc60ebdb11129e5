# schedule on the MicroPython unix port with a fake clock and a scripted random source.
from ias import schedule


class Clock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


def make(interval=7200, rand=0.5):
    clock = Clock()
    values = rand if isinstance(rand, list) else None

    def r():
        return values.pop(0) if values is not None else rand

    return schedule.Schedule(interval, clock, r), clock


def due_after(s, clock, step_ms=1000, limit_s=10**6):
    """Advance the fake clock until poll() fires; returns (seconds waited, why)."""
    start = clock.t
    while clock.t - start <= limit_s * 1000:
        why = s.poll()
        if why:
            return (clock.t - start) // 1000, why
        clock.t += step_ms
    raise AssertionError("never due")


def test_boot_call_then_interval():
    s, clock = make()
    assert s.poll() == "boot"
    s.done("up-to-date")
    assert s.poll() is None
    waited, why = due_after(s, clock)
    assert waited == 7200 and why == "interval"


def test_jitter_bounds():
    for r, expect in ((0.0, 6480), (0.999999, 7920), (0.25, 6840)):
        s, clock = make(rand=r)
        s.done("no-update")
        assert due_after(s, clock)[0] == expect, (r, expect)


def test_backoff_doubles_up_to_interval():
    s, clock = make(interval=1800)
    waits = []
    for _ in range(8):
        s.done("error")
        waited, why = due_after(s, clock)
        assert why == "retry"
        waits.append(waited)
    assert waits == [60, 120, 240, 480, 960, 1800, 1800, 1800], waits
    s.done("updated")
    assert s.failures == 0
    assert due_after(s, clock) == (1800, "interval")


def test_backoff_jittered_too():
    s, clock = make(rand=[0.0, 1.0])
    s.done("error")
    assert due_after(s, clock, 100)[0] == 54
    s.done("error")
    assert due_after(s, clock, 100)[0] == 132


def test_button_press_is_forced_through_backoff():
    s, clock = make()
    for _ in range(5):
        s.done("error")
    assert s.next_in_ms() > 900000
    clock.t += 5000
    s.press()
    assert s.poll() == "button"
    assert s.next_in_ms() == 0
    s.done("up-to-date")
    assert s.poll() is None and s.failures == 0


def test_retry_after_honoured_and_never_earlier():
    s, clock = make(rand=0.0)  # the lowest jitter must not bring a Retry-After forward
    s.done("no-update", retry_after=10000)
    waited, why = due_after(s, clock)
    assert waited == 10000 and why == "retry"
    s.done("error", retry_after=300)
    assert due_after(s, clock)[0] == 300  # longer than the 60 s backoff
    s.done("error", retry_after=10)
    assert due_after(s, clock)[0] == 120  # the backoff is longer: it wins


def test_retry_after_capped():
    s, clock = make()
    s.done("no-update", retry_after=10**8)
    assert 86400 * 1000 <= s.next_in_ms() <= 86400 * 1100


def test_interval_zero_disables_periodic_but_retries_failures():
    s, clock = make(interval=0)
    assert s.poll() == "boot"
    s.done("up-to-date")
    assert s.next_in_ms() is None
    clock.t += 10**9
    assert s.poll() is None
    s.press()
    assert s.poll() == "button"
    s.done("error")
    assert due_after(s, clock)[0] == 60


def test_tick_wrap_and_long_interval():
    # ticks wrap (every 2**30 ms on ESP ports); a 30-day interval is longer than that
    import time

    clock = Clock()
    base = time.ticks_add(0, -5000)  # 5 s before this port's wrap

    class Wrapping:
        def __call__(self):
            return time.ticks_add(base, clock.t)

    s = schedule.Schedule(30 * 86400, Wrapping(), lambda: 0.5)
    s.done("up-to-date")
    hours = 0
    while s.poll() is None:
        clock.t += 3600 * 1000
        hours += 1
        assert hours < 1000
    assert hours == 720, hours
