"""Issue 5 acceptance, end to end: a virtual ESP32 running the real firmware against `ias serve`
over real TLS on loopback. An update is applied, tried and committed; a version that fails at
import, or cannot make its verified call home, goes back by itself; a tampered bundle, a bundle
signed by another key and a lower security counter are refused with the device unchanged."""

import gzip
import hashlib
import io
import tarfile

import pytest

from tests.scenario import (  # noqa: F401 (fixtures)
    APP,
    assert_settings_kept,
    assert_unchanged,
    make_chain,
    make_world,
    one_root_world,
    staged_firmware,
    update_to,
)
from tools import REPO, bundle, keys


@pytest.fixture
def world(make_world):  # noqa: F811
    return one_root_world(make_world)


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def sent(rec, name):
    for key, value in rec["headers"]:
        if key.lower() == name.lower():
            return value
    return None


def test_v1_to_v2_applied_committed_then_304(world):
    world.boot(1)  # first power-on with nothing published (404): settings get completed
    before = world.snapshot()
    assert before["app"] == {"active": "slot_a", "name": APP, "version": "1.0", "counter": 0}
    # `ias sim init` recorded the factory app's MD5 beside its name (docs/callhome.md).
    factory_md5 = bundle.app_md5(REPO / "examples" / "blink")
    assert before["settings"]["app_md5"] == factory_md5
    art = world.publish("2.0", 2)
    md5 = md5_of(art)
    mark = world.mark()
    world.boot(3)

    ptr = world.pointer()
    assert ptr["active"] == "slot_b"
    assert (ptr["name"], ptr["version"], ptr["counter"], ptr["md5"]) == (APP, "2.0", 2, md5)
    assert ptr["size"] == art.stat().st_size
    assert "trial" not in ptr and "prev" not in ptr
    settings = world.settings()
    assert (settings["app_name"], settings["app_version"]) == (APP, "1.0")  # the factory app
    state = world.state()
    assert state["counters"] == {"app": 2}  # the anti-rollback floor rose at commit
    assert "last_error" not in state

    # The first call home downloads (200); the trial boot's call home reports the new MD5, the
    # server answers 304, and that verified answer committed the trial.
    calls = world.requests(mark, "/ota/updates")
    assert len(calls) == 2, calls
    # Until the first update the factory app's recorded MD5 is reported, never an empty one.
    assert sent(calls[0], "x-ESP-SKETCH-MD5") == factory_md5 != md5
    assert sent(calls[1], "x-ESP-SKETCH-MD5") == md5
    assert sent(calls[1], "x-ESP-SKETCH-SIZE") == str(art.stat().st_size)

    # Nothing else changed: the new slot's files were added, /cert and /keys are as they were,
    # and settings are as they were (the pointer holds the version).
    after = world.snapshot()
    added = set(after["tree"]) - set(before["tree"])
    assert added == {"/slot_b/" + name for name, _ in bundle.collect(REPO / "examples" / "blink")}
    assert set(before["tree"]) - set(after["tree"]) == set()
    for path, size in before["tree"].items():
        if path not in ("/app.json", "/settings.json"):
            assert after["tree"][path] == size, path
    assert_settings_kept(before["settings"], after["settings"], after["app"], "2.0")
    # the floor rose; last_call records the update (the config page's Info shows it)
    assert set(after["state"]) - set(before["state"]) <= {"counters", "time_floor", "last_call"}

    # Later call homes: x-ESP-SKETCH-MD5 is the artifact's MD5, so the server answers 304.
    mark = world.mark()
    res = world.callhome()
    assert (res["outcome"], res["status"]) == ("up-to-date", 304)
    (call,) = world.requests(mark, "/ota/updates")
    assert sent(call, "x-ESP-SKETCH-MD5") == md5
    assert sent(call, "x-ESP-VERSION") == "%s v2.0" % APP
    assert world.pointer() == ptr


def test_trial_call_home_reports_the_version_on_trial(world):
    art = world.publish("2.0", 2)
    mark = world.mark()
    world.boot(3)
    calls = world.requests(mark, "/ota/updates")
    assert sent(calls[1], "x-ESP-SKETCH-MD5") == md5_of(art)
    assert sent(calls[1], "x-ESP-VERSION") == "%s v2.0" % APP


def test_v3_failing_at_import_rolls_back_and_is_not_taken_again(world):
    v2 = update_to(world, "2.0", 2)
    before = world.snapshot()
    art = world.publish("3.0", 3, broken=True)
    mark = world.mark()
    world.boot(3)

    assert world.pointer() == v2  # back on 2.0, committed, as before
    console = world.console()
    assert "trial boot 1 of %s 3.0" % APP in console
    error = world.header("x-IAS-LAST-ERROR", mark)
    assert error is not None and "3.0" in error and "RuntimeError" in error
    state = world.state()
    assert md5_of(art) in state["refused"]  # beside its signed identity (test_bombs_e2e.py)
    assert state["counters"] == {"app": 2}  # v3's counter was never committed
    assert "last_error" not in state  # delivered, then dropped

    # The server still offers v3: a forced call home does not take it again.
    mark = world.mark()
    res = world.callhome()
    assert res["outcome"] == "no-update" and "refused" in res["reason"]
    assert world.requests(mark, "/ota/updates")
    after = world.snapshot()
    assert after["app"] == before["app"] and after["settings"] == before["settings"]
    for path in before["tree"]:
        if not path.startswith("/slot_a/"):  # the inactive slot still holds v3's files
            assert after["tree"].get(path) == before["tree"][path], path
    assert set(after["state"]) - set(before["state"]) <= {"refused", "time_floor"}


def _v4_stuck_on_trial(world):
    """v2 committed, v4 installed and switched to, then the server goes away: v4 gets three
    trial boots, each a failed call home and a power-off; the fourth boot must go back."""
    v2 = update_to(world, "2.0", 2)
    world.publish("4.0", 4)
    res = world.callhome()  # installs, switches and resets into v4
    assert res["outcome"] == "updated" and res["app"]["version"] == "4.0"
    assert world.pointer()["trial"]["boots"] == 0
    world.server.stop()  # from now on v4 can never make its verified call home
    for n in (1, 2, 3):
        world.boot(2)
        ptr = world.pointer()
        assert ptr["version"] == "4.0" and ptr["trial"]["boots"] == n
    return v2


def test_v4_that_cannot_call_home_rolls_back_after_three_trial_boots(world):
    v2 = _v4_stuck_on_trial(world)
    world.server.start()  # same ports; the fourth boot rolls back, then calls home
    mark = world.mark()
    world.boot(1)
    assert "rollback: 4.0 not confirmed within 3 boots" in world.console()
    error = world.header("x-IAS-LAST-ERROR", mark)
    assert error is not None and "4.0 not confirmed within 3 boots" in error
    # v4's trial failed for the network's sake (connection refused): that same call home
    # found v4 still offered and took it again; its new trial confirmed it
    assert "network: refused; retried later" in error
    ptr = world.pointer()
    assert ptr["version"] == "4.0" and "trial" not in ptr, ptr
    assert ptr["md5"] != v2["md5"]
    state = world.state()
    assert state["counters"] == {"app": 4}
    assert "last_error" not in state and "ota_error" not in state  # delivered


def test_v4_rollback_reported_even_when_the_network_stays_down(world):
    v2 = _v4_stuck_on_trial(world)
    world.boot(2)  # rolls back, and its call home fails too
    assert world.pointer() == v2
    assert "4.0 not confirmed within 3 boots" in world.console()
    world.server.start()
    mark = world.mark()
    res = world.callhome()
    assert res["outcome"] == "updated"  # a trial the network blocked is retried
    error = world.header("x-IAS-LAST-ERROR", mark) or ""
    assert "4.0 not confirmed within 3 boots" in error


def test_v4_that_cannot_call_home_rolls_back_after_ten_minutes(world):
    # One long trial boot: the server now presents a chain nobody trusts and no recovery
    # bundle exists, so the ladder fails too; trial_tick gives up after 10 virtual minutes.
    v2 = update_to(world, "2.0", 2)
    before = world.snapshot()
    world.publish("4.0", 4)
    assert world.callhome()["outcome"] == "updated"
    world.serve(make_chain("Stranger"))
    world.boot(700)  # virtual seconds
    assert world.pointer() == v2
    console = world.console()
    assert "4.0 not confirmed within 10 minutes" in console
    assert "recovery ladder: failed" in console
    after = world.snapshot()
    assert after["app"] == before["app"]
    assert world.anchor_files() == ["iasRootCa.cer"]
    assert world.state()["counters"] == {"app": 2}


# -- refusals ---------------------------------------------------------------------------------


def _tamper(path):
    """Flip one byte inside app.py's data in the bundle; the server's x-MD5 follows the file,
    so transport integrity passes and only the signed manifest's SHA-256 can catch it."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        member = tar.getmember("app.py")
    raw[member.offset_data + 10] ^= 0x01
    path.write_bytes(bundle.gzip_small_window(bytes(raw)))


def _tampered(world):
    _tamper(world.publish("2.1", 2))
    return "hash_mismatch"


def _foreign_key(world):
    world.publish("2.1", 2, key=keys.new_key(bits=2048))
    return "bad_signature"


def _lower_counter(world):
    world.publish("2.1", 1)
    return "old_counter"


@pytest.mark.parametrize(
    "attack", [_tampered, _foreign_key, _lower_counter], ids=["tampered", "foreign", "counter"]
)
def test_bad_bundle_refused_with_device_unchanged(world, attack):
    update_to(world, "2.0", 2)
    before = world.snapshot()
    reason = attack(world)
    mark = world.mark()
    res = world.callhome()
    assert (res["outcome"], res["reason"]) == ("error", reason)
    assert len(world.requests(mark, "/ota/updates")) == 1
    after = world.snapshot()
    # A signature refusal makes the device look for a rotated update key (none is published).
    volatile = ("last_error", "last_call", "time_floor", "keys_checked_at")
    assert_unchanged(before, after, volatile=volatile, inactive_slot=True)
    assert after["state"]["last_error"] == reason  # reported on the next call home
    looked = [r for r in world.requests(mark) if r["path"].endswith("/keys.json")]
    assert bool(looked) == (reason == "bad_signature")
    assert not [p for p in after["tree"] if p.startswith("/ota")]  # no staging left behind
