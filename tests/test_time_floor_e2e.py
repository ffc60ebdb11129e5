"""Issue 17 item 1, end to end: one NTP answer cannot strand a device (design §1 rule 7).

A virtual ESP32 boots from its flash and calls home to `ias serve` over verified TLS. Its "NTP"
is scripted in board.json: one boot hears a lie (ten years or two days ahead), later boots hear
the honest time. The time floor moves only on authenticated time (the verified server's Date),
so the lie is never persisted, and the device calls home again as soon as honest time returns;
with a confirmed floor, it does not even wait: it distrusts the lie and uses the floor."""

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.scenario import make_chain, make_world, staged_firmware  # noqa: F401 (fixtures)

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

UPDATES = "/ota/updates"
DAY = 86400
YEAR = 365 * DAY


def faketime_world(make_world, monkeypatch):  # noqa: F811
    """A world whose board's TLS library reads the clock the board sets (board_unix: under
    libfaketime, set_time() writes the offset file), as an ESP32's mbedTLS reads its RTC."""
    if not LIBFAKETIME.exists():
        pytest.fail("libfaketime is missing (Debian package faketime; make test installs it)")
    a = make_chain("A")
    w = make_world(trust=[a.root], serve=a)
    monkeypatch.setenv("LD_PRELOAD", str(LIBFAKETIME))  # only the board's processes start
    monkeypatch.setenv("FAKETIME_TIMESTAMP_FILE", str(w.board / "faketime"))  # after this
    monkeypatch.setenv("FAKETIME_NO_CACHE", "1")
    monkeypatch.setenv("DONT_FAKE_MONOTONIC", "1")  # ticks (timeouts, deadlines) stay real
    return w


@pytest.fixture
def world(make_world, monkeypatch):  # noqa: F811
    return faketime_world(make_world, monkeypatch)


def set_ntp(world, answer):
    """What the board's NTP answers from the next boot on: Unix seconds, or "host" (honest)."""
    path = world.board / "board.json"
    hw = json.loads(path.read_text())
    hw["ntp"] = answer
    path.write_text(json.dumps(hw))


def next_day(world):
    """The world's clock moves on a day while the board is off (its honest NTP follows)."""
    path = world.board / "clock.json"
    skipped = json.loads(path.read_text()).get("skipped_ms", 0) if path.exists() else 0
    path.write_text(json.dumps({"skipped_ms": skipped + DAY * 1000}))


def now():
    return int(dt.datetime.now(dt.UTC).timestamp())


def verified_calls(world, mark):
    return [r for r in world.requests(mark, UPDATES) if r["tls"]]


def boot_and_call(world):
    mark = world.mark()
    world.boot(1)
    return verified_calls(world, mark)


def floor(world):
    return world.state().get("time_floor", 0)


def ten_years_ahead_on_a_fresh_device(world):
    set_ntp(world, now() + 10 * YEAR)
    assert boot_and_call(world) == []  # every certificate looks expired: no verified call
    assert floor(world) < now() + DAY  # ...and the lie was not persisted as the floor
    assert "expired" in world.console()

    set_ntp(world, "host")
    next_day(world)
    assert boot_and_call(world), world.console()[-3000:]  # honest time: home again
    state = world.state()
    assert "last_error" not in state
    assert now() - 600 <= floor(world) <= now() + 2 * DAY  # the server's Date confirmed it


def ten_years_ahead_with_a_confirmed_floor(world):
    assert boot_and_call(world)  # in service: a verified call home confirms the floor
    confirmed = floor(world)
    assert now() - 600 <= confirmed <= now() + 60

    set_ntp(world, now() + 10 * YEAR)  # one lying answer on the next boot
    next_day(world)
    assert boot_and_call(world), world.console()[-3000:]  # the floor carried the call home
    log = world.console()
    assert "NTP time distrusted: trying the confirmed floor %d" % confirmed in log
    assert floor(world) < now() + DAY

    set_ntp(world, "host")
    next_day(world)
    assert boot_and_call(world), world.console()[-3000:]
    assert "last_error" not in world.state()


def two_days_ahead(world):
    set_ntp(world, now() + 2 * DAY)  # certificates still verify: the call home succeeds
    assert boot_and_call(world), world.console()[-3000:]
    assert floor(world) <= now() + 60  # the server's Date, not NTP's, is the floor

    set_ntp(world, "host")  # back to honest time the same day
    assert boot_and_call(world), world.console()[-3000:]
    log = world.console()
    assert "no sane time" not in log[log.rindex("--- boot 1 (") :]
    assert "last_error" not in world.state()


# The scenarios are also attack cases of the reliability ledger (tests/reliability).
def test_ntp_ten_years_ahead_on_a_fresh_device_does_not_strand_it(world):
    ten_years_ahead_on_a_fresh_device(world)


def test_ntp_ten_years_ahead_is_distrusted_against_the_confirmed_floor(world):
    ten_years_ahead_with_a_confirmed_floor(world)


def test_ntp_two_days_ahead_does_not_strand_it(world):
    two_days_ahead(world)
