"""The clock past 2029-12-31, where the ESP ports' count from 2000 passes 946,684,800 (the value
the old conversion took for "already Unix time"): a virtual ESP32 whose world reads 2030-01-02
(libfaketime moves the board process's clock, so NTP answers 2030 too) boots from its flash,
calls home to `ias serve` over verified TLS and reports its anchors' earliest expiry as the
right date. Its time floor is the server's Date, not what NTP said."""

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from tests.scenario import Chain, make_world, staged_firmware  # noqa: F401 (fixtures)
from tools import pki

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
WHEN = "2030-01-02 12:00:00"


def _chain_valid_in_2030():
    root = pki.make_ca("Root 2030", org="CA 2030", not_before=-1, not_after=3650)
    inter = pki.make_ca("Intermediate 2030", org="CA 2030", issuer=root, not_after=3600)
    return Chain(root, inter, pki.make_leaf(inter, not_after=3600))


def test_esp32_in_2030_calls_home_verified_and_reports_its_anchor_expiry(
    make_world,  # noqa: F811
    monkeypatch,
):
    if not LIBFAKETIME.exists():
        pytest.fail("libfaketime is missing (Debian package faketime; make test installs it)")
    chain = _chain_valid_in_2030()
    world = make_world(trust=[chain.root], serve=chain)
    monkeypatch.setenv("LD_PRELOAD", str(LIBFAKETIME))  # only the board's processes start
    monkeypatch.setenv("FAKETIME", "@" + WHEN)  # after this, and they see 2030
    mark = world.mark()
    world.boot(1)
    calls = world.requests(mark, "/ota/updates")
    assert calls and calls[-1]["tls"], world.console()[-3000:]
    log = world.console()
    assert "no sane time" not in log and "clock_unset" not in log, log[-3000:]
    cert = x509.load_der_x509_certificate(chain.root.der)
    expiry = cert.not_valid_after_utc.date().isoformat()
    assert world.header("x-IAS-ANCHOR-EXPIRY", mark) == expiry
    # the floor moves only on authenticated time: the verified server's Date (this host's
    # real clock, outside libfaketime), never on NTP's 2030 alone
    floor = world.state().get("time_floor", 0)
    assert 0 <= dt.datetime.now(dt.UTC).timestamp() - floor < 600
