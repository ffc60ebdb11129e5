"""Issue 17 items 3 and 4, as the device runs them: a virtual ESP32 booted from its flash, its
own main loop calling `ias serve` over real TLS on loopback.

- A gzip bomb (a signed bundle and 64 MiB of zeros after the tar's end, 64 KB on the wire) is
  inflated only to what its signed manifest declares plus one tar record, refused `too_large`,
  the old app keeps running and the next call home installs a real update.
- A release that failed its trial is refused by what its signature covers: the same signed
  manifest re-padded and re-compressed (other bytes, other MD5) is not taken again.
- A release whose trial could not call home (the network was down) is not refused for good:
  it is installed again when the network returns, and commits.
"""

import gzip
import hashlib
import re
import time

import pytest

from tests.scenario import (  # noqa: F401 (fixtures)
    APP,
    assert_unchanged,
    make_chain,
    make_world,
    staged_firmware,
)
from tools import bundle, sim

BOMB_ZEROS = 64 * 1024 * 1024


@pytest.fixture
def world(make_world):  # noqa: F811
    chain = make_chain("A")
    return make_world(trust=[chain.root], serve=chain)


def rewrap(art, tail=b"", wbits=10):
    """The published bundle's tar again, with `tail` after it, gzip with a 2**wbits window:
    other bytes (and MD5), the same signed manifest and files."""
    raw = gzip.decompress(art.read_bytes())
    art.write_bytes(bundle.gzip_small_window(raw + tail, wbits))
    return art


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def inflated(console):
    """What the last gzip unpack on the device inflated (its log line in `console`)."""
    found = re.findall(r"gzip body: (\d+) bytes inflated", console)
    return int(found[-1]) if found else None


def test_gzip_bomb_stops_early_and_the_next_call_home_works(world):
    world.boot(1)  # the factory app runs; nothing published yet
    before = world.snapshot()
    bomb = rewrap(world.publish("2.0", 2), bytes(BOMB_ZEROS))
    sent = bomb.stat().st_size
    assert sent < 96 * 1024  # about 64 KB on the wire

    t0 = time.monotonic()
    run = sim.run_board(world.board, "callhome", echo=False)  # a short button press
    wall = time.monotonic() - t0
    res = run.result
    assert res is not None, run.output[-3000:]
    assert (res["outcome"], res["reason"]) == ("error", "too_large"), res
    got = inflated(run.output)
    print(
        "bomb: %d bytes sent, %d inflated of %d, call home %.1f s" % (sent, got, BOMB_ZEROS, wall)
    )
    assert got is not None and got < 64 * 1024, got  # the manifest's ~10 KB plus one record
    after = world.snapshot()
    assert_unchanged(
        before, after, volatile=("last_error", "last_call", "time_floor"), inactive_slot=True
    )
    assert after["state"]["last_error"] == "too_large"
    assert not [p for p in after["tree"] if p.startswith("/ota")]  # staging discarded

    # The old app keeps running across a power cycle, and the next call home works: a real
    # update is installed, tried and committed, and the refusal was reported.
    world.publish("2.1", 3)
    mark = world.mark()
    world.boot(3)
    ptr = world.pointer()
    assert ptr["version"] == "2.1" and "trial" not in ptr, world.console()[-3000:]
    assert "too_large" in (world.header("x-IAS-LAST-ERROR", mark) or "")


def update_to(world, version, counter):
    """Publish, power on, let it install, reset and commit: the pointer afterwards."""
    world.publish(version, counter)
    world.boot(3)
    ptr = world.pointer()
    assert ptr.get("version") == version and "trial" not in ptr, world.console()[-3000:]
    return ptr


def test_release_that_failed_its_trial_is_refused_in_other_bytes(world):
    v2 = update_to(world, "2.0", 2)
    art = world.publish("3.0", 3, broken=True)  # raises at import: fails its trial
    world.boot(3)
    assert world.pointer() == v2
    first = md5_of(art)
    before = world.snapshot()
    # The server offers the same signed release re-padded (zeros within a tar record) and
    # re-compressed with another window: other bytes and MD5, the same signed manifest.
    for tail, wbits in ((bytes(4096), 10), (bytes(512), 9)):
        rewrap(art, tail, wbits)
        assert md5_of(art) != first
        mark = world.mark()
        res = world.callhome()
        assert res["outcome"] == "no-update" and "refused" in res["reason"], res
        assert world.requests(mark, "/ota/updates")
        after = world.snapshot()
        volatile = ("last_call", "time_floor")
        assert_unchanged(before, after, volatile=volatile, inactive_slot=True)
    assert world.pointer() == v2
    # The refused list holds the signed identity (name, version, counter, manifest digest)
    # and the first transfer's MD5 (refused before any download when the same bytes return).
    refused = world.state()["refused"]
    assert first in refused
    ident = [k for k in refused if k.startswith("%s 3.0 3 " % APP)]
    assert len(ident) == 1, refused


def test_trial_blocked_by_the_network_is_retried_and_commits(world):
    v2 = update_to(world, "2.0", 2)
    art = world.publish("4.0", 4)
    res = world.callhome()  # installs, switches and resets into v4
    assert res["outcome"] == "updated" and res["app"]["version"] == "4.0"
    world.server.stop()  # the network is down for v4's whole trial: three boots
    for n in (1, 2, 3):
        world.boot(2)
        assert world.pointer()["trial"]["boots"] == n
    world.boot(2)  # the fourth boot goes back to v2; its call home fails too
    assert world.pointer() == v2
    state = world.state()
    assert md5_of(art) not in state.get("refused", []), state
    assert state.get("trial_retry", [None, 0])[1] == 1, state
    assert "network: refused; retried later" in world.console()

    world.server.start()  # the network returns: v4 is offered, installed again and commits
    mark = world.mark()
    world.boot(4)
    ptr = world.pointer()
    assert (ptr["version"], ptr["md5"]) == ("4.0", md5_of(art)), world.console()[-3000:]
    assert "trial" not in ptr
    assert world.state()["counters"] == {"app": 4}
    assert "trial_retry" not in world.state()
    calls = world.requests(mark, "/ota/updates")
    assert len(calls) >= 2  # the download, then the trial's confirming call home
    error = world.header("x-IAS-LAST-ERROR", mark) or ""
    assert "4.0 not confirmed within 3 boots" in error, error
