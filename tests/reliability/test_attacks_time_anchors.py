"""Attacks on time and on anchor-set changes (issue 17, design §1 rules 7 and 8), counted in the
attack ledger: one lying NTP answer (ten years or two days ahead; ten years ahead during a trial
or a key rotation), an anchor set dropping the old root 25 days before it expires, a man in the
middle breaking handshakes while a set is pending. Each is the scenario of
tests/test_time_floor_e2e.py, tests/test_anchorset_pending_e2e.py (a virtual ESP32),
tests/test_trial_clock_e2e.py or tests/test_keys_clock_e2e.py (a virtual ESP8266) against
`ias serve`; `make test` runs them there, `make reliability` here."""

import time

import pytest

from tests import test_anchorset_pending_e2e as anchorset_e2e
from tests import test_keys_clock_e2e as keys_e2e
from tests import test_time_floor_e2e as time_e2e
from tests import test_trial_clock_e2e as trial_e2e
from tests.reliability.ledger import record
from tests.scenario import make_world, staged_firmware  # noqa: F401 (fixtures)

CAT = "attacks"


def _survives(case, scenario, *args):
    ok = False
    t0 = time.monotonic()
    try:
        scenario(*args)
        ok = True
    finally:
        record(CAT, case, ok, seconds=round(time.monotonic() - t0, 2))


@pytest.mark.slow  # make test runs these scenarios once, in their e2e files
def test_ntp_answer_ten_years_ahead(make_world, monkeypatch):  # noqa: F811
    world = time_e2e.faketime_world(make_world, monkeypatch)
    _survives("NTP answer ten years ahead", time_e2e.ten_years_ahead_with_a_confirmed_floor, world)


@pytest.mark.slow  # make test runs these scenarios once, in their e2e files
def test_ntp_answer_ten_years_ahead_before_any_confirmed_time(make_world, monkeypatch):  # noqa: F811
    world = time_e2e.faketime_world(make_world, monkeypatch)
    _survives(
        "NTP answer ten years ahead on a fresh device",
        time_e2e.ten_years_ahead_on_a_fresh_device,
        world,
    )


@pytest.mark.slow  # make test runs these scenarios once, in their e2e files
def test_ntp_answer_two_days_ahead(make_world, monkeypatch):  # noqa: F811
    world = time_e2e.faketime_world(make_world, monkeypatch)
    _survives("NTP two days ahead", time_e2e.two_days_ahead, world)


@pytest.mark.slow  # make test runs these scenarios once, in their e2e files
def test_ntp_answer_ten_years_ahead_during_a_trial(tmp_path):
    with trial_e2e.esp8266_board(tmp_path) as board:
        _survives(
            "NTP ten years ahead during a trial",
            trial_e2e.trial_with_the_clock_ten_years_ahead,
            board,
        )


@pytest.mark.slow  # make test runs these scenarios once, in their e2e files
def test_ntp_answer_ten_years_ahead_during_a_key_rotation(tmp_path):
    with keys_e2e.esp8266_board(tmp_path) as board:
        _survives(
            "NTP ten years ahead during an update-key rotation",
            keys_e2e.rotation_with_the_clock_ten_years_ahead,
            board,
        )


@pytest.mark.slow  # make test runs these scenarios once, in their e2e files
def test_set_dropping_the_old_root(make_world):  # noqa: F811
    _survives(
        "set dropping the old root 25 days before expiry",
        anchorset_e2e.old_root_kept_until_the_server_moves,
        make_world,
    )


@pytest.mark.slow  # make test runs these scenarios once, in their e2e files
def test_mitm_breaks_handshakes_while_a_set_is_pending(make_world):  # noqa: F811
    _survives(
        "MITM breaks handshakes while a set is pending",
        anchorset_e2e.mitm_while_pending,
        make_world,
    )
