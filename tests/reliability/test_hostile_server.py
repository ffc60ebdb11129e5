"""Hostile servers against the real firmware on a virtual ESP32 (micropython, littlefs, real TLS
on loopback): every fault of `ias serve` and a scripted TLS server for the rest (resets at each
phase, truncated and oversized heads, bad lengths, TLS alerts and tampered records mid-body).
Each case checks: the device stays up (a clean error exit, and the next call home works), its
persistent files are byte-identical (app pointer, slots, anchors, keys, settings, and the state
but for last_error/time_floor), the reason is the specific code, and the time is bounded."""

import pytest

from tests.reliability import scripts
from tests.reliability.boards import Lab
from tests.reliability.ledger import record

EXIT_ERROR, EXIT_RESET = 3, 75
FAST_S = 5.0  # a refused answer: process start, TLS handshake, the refusal
HEAD_S, READ_S, CONNECT_S = 5.0, 10.0, 10.0  # the device's own timeouts (callhome.py)
MARGIN_S = 4.0

# script -> (reason, bound in seconds)
HOSTILE = {
    "rst_in_handshake": ("closed", FAST_S),
    "fin_in_handshake": ("closed", FAST_S),
    "plain_http_on_tls_port": ("tls_error", FAST_S),
    "alert_in_handshake": ("tls_error", FAST_S),
    "rst_after_request": ("closed", FAST_S),
    "close_after_request": ("closed", FAST_S),
    "truncated_head": ("closed", FAST_S),
    "rst_mid_head": ("closed", FAST_S),
    "headers_10000": ("too_many_headers", FAST_S),
    "header_line_1mb": ("line_too_long", FAST_S),
    "status_line_1mb": ("line_too_long", FAST_S),
    "garbage_status": ("bad_status", FAST_S),
    "binary_noise": ("bad_status", FAST_S),
    "nul_in_header": ("bad_update_head", FAST_S),
    "negative_length": ("bad_length", FAST_S),
    "huge_length": ("bad_length", FAST_S),
    "length_2_31": ("bad_length", FAST_S),
    "two_lengths": ("bad_length", FAST_S),
    "chunked_body": ("bad_update_head", FAST_S),
    "missing_md5": ("bad_update_head", FAST_S),
    "bigger_than_flash": ("no_space", FAST_S),
    "body_longer_than_declared": ("bad_archive", FAST_S),
    "body_shorter_than_declared": ("closed", FAST_S),
    "md5_mismatch": ("md5_mismatch", FAST_S),
    "rst_mid_body": ("closed", FAST_S),
    "close_notify_mid_body": ("closed", FAST_S),
    "alert_mid_body": ("tls_error", FAST_S),
    "tampered_record_mid_body": ("tls_error", FAST_S),
    "garbage_record_mid_body": ("tls_error", FAST_S),
}
HOSTILE_SLOW = {
    "silent_in_handshake": ("timeout", CONNECT_S + MARGIN_S),
    "silent_after_request": ("timeout", HEAD_S + MARGIN_S),
    "silent_mid_head": ("timeout", READ_S + MARGIN_S),
    "silent_mid_body": ("timeout", READ_S + MARGIN_S),
}
# ias serve faults -> (reason, bound, fault parameters)
SERVE = {
    "close_early": ("closed", FAST_S, {}),
    "wrong_length": ("closed", FAST_S, {}),
    "long_body": ("md5_mismatch", FAST_S, {}),
    "wrong_md5": ("md5_mismatch", FAST_S, {}),
    "garbage_headers": ("bad_header", FAST_S, {}),
    "reset": ("closed", FAST_S, {}),
}
SERVE_SLOW = {
    "no_response": ("timeout", HEAD_S + MARGIN_S, {}),
    "stall": ("timeout", READ_S + MARGIN_S, {}),
    "slow_body": ("timeout", READ_S + MARGIN_S, {"interval": READ_S + 1}),
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("hostile"))
    yield lab
    lab.stop()


def survive(board, provoke, reason, bound, next_outcome, next_code, case, category):
    """Run one hostile call home and the next, normal one; assert and record the case."""
    before = board.persistent()
    provoke()
    code, res, wall, out = board.callhome(timeout=bound + 60)
    after = board.persistent()
    code2, res2, _, out2 = board.callhome()
    got = res and res.get("reason")
    ok = (
        code == EXIT_ERROR
        and res["outcome"] == "error"
        and got == reason
        and wall < bound
        and after == before
        and code2 == next_code
        and res2["outcome"] == next_outcome
    )
    record(category, case, ok, reason=got, seconds=round(wall, 2), bound=bound)
    assert res is not None, "the device crashed (exit %s):\n%s" % (code, out[-2000:])
    assert code == EXIT_ERROR and res["outcome"] == "error", (code, res)
    assert got == reason, res
    assert wall < bound, "took %.1f s, bound %.1f s" % (wall, bound)
    assert after == before, "persistent state changed by a failed call home"
    assert res2 is not None and res2["outcome"] == next_outcome, (code2, res2, out2[-1500:])
    assert code2 == next_code


def _hostile(lab, name, reason, bound):
    board = lab.hostile_board()
    survive(
        board,
        lambda: lab.hostile.queue(getattr(scripts, name)),
        reason,
        bound,
        "up-to-date",
        0,
        name,
        "hostile server (scripted TLS)",
    )


def _serve(lab, kind, reason, bound, params):
    board = lab.serve_board()

    def provoke():
        lab.server.clear_faults()
        lab.server.fault(kind, **params)

    try:
        # the next call takes the real signed v1.1 and resets into it
        survive(
            board,
            provoke,
            reason,
            bound,
            "updated",
            EXIT_RESET,
            kind,
            "hostile server (ias serve faults)",
        )
    finally:
        lab.server.clear_faults()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile(lab, name):
    _hostile(lab, name, *HOSTILE[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE_SLOW))
def test_hostile_silence(lab, name):
    _hostile(lab, name, *HOSTILE_SLOW[name])


@pytest.mark.parametrize("kind", sorted(SERVE))
def test_serve_fault(lab, kind):
    _serve(lab, kind, *SERVE[kind])


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(SERVE_SLOW))
def test_serve_fault_slow(lab, kind):
    _serve(lab, kind, *SERVE_SLOW[kind])
