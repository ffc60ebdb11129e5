# App bundles on a real littlefs (NOR model mounted at /pc): v1 -> v2 into the slots, each
# refusal (tampered file, bad or foreign signature, lower counter, extra/missing/resized files,
# hostile names, unsigned by policy) leaves the device exactly as it was; the trial rules
# (3 boots, 10 minutes, crash or watchdog) roll back by themselves; commit keeps the new version.
import json
import os
import sys
import time

import ota_fixtures as fx
from ias import appbundle, fwimage, tarstream, trial
from ias import slots as slots_mod
from ias import state as state_mod
from ias.reason import ReasonError
from ota_fixtures import Ctx, FakeBoard, Reset

FIX = fx.make("bundles")
MD5 = json.loads(fx.read(FIX + "/md5.json"))
ROOT = "/pc"
V1 = fx.tree(FIX + "/src_v1")
V2 = fx.tree(FIX + "/src_v2")


def device(keys=("update",)):
    """A fresh flash with the update key; returns (board, state, slots, ctx)."""
    fx.unmount(ROOT)
    fx.fresh_flash(ROOT)
    if keys:
        fx.copy_keys(FIX, keys, ROOT)
    board = FakeBoard()
    st = state_mod.State(ROOT + "/state.json")
    slots = slots_mod.Slots(ROOT)
    return board, st, slots, Ctx(board, st, slots)


def bundle(name):
    return FIX + "/" + name + ".tar"


def installed(ctx, name):
    fx.install(ctx, bundle(name))
    assert trial.boot_check(ctx.board, ctx.state, ctx.slots) == "trial"
    assert trial.commit(ctx.board, ctx.state, ctx.slots) is not None


def snapshot():
    return fx.tree(ROOT)


def refused(ctx, name, reason):
    before = snapshot()
    try:
        fx.install(ctx, bundle(name))
    except ReasonError as e:
        assert e.reason == reason, "%s: want %s, got %r" % (name, reason, e)
        after = snapshot()
        assert after == before, "%s changed the device: %r" % (
            name,
            sorted(set(after) ^ set(before)),
        )
        return e
    raise AssertionError("%s was installed; want %s" % (name, reason))


def test_v1_then_v2_into_the_slots():
    board, st, slots, ctx = device()
    assert slots.active_app_dir() == "/pc/slot_a"
    assert slots.installed_artifact() == {
        "size": 0,
        "md5": "",
        "name": "",
        "version": "",
        "counter": 0,
    }
    installed(ctx, "v1")
    assert slots.active() == "slot_b" and fx.tree("/pc/slot_b") == V1
    art = slots.installed_artifact()
    assert art["size"] == len(fx.read(bundle("v1")))
    assert art["md5"] == MD5["v1"] and art["name"] == "blink" and art["version"] == "1.0"
    fx.install(ctx, bundle("v2"))
    info = json.loads(fx.read("/pc/app.json"))
    assert info["active"] == "slot_a" and info["trial"]["kind"] == "bundle"
    assert info["prev"]["active"] == "slot_b" and info["prev"]["md5"] == MD5["v1"]
    assert fx.tree("/pc/slot_a") == V2 and fx.tree("/pc/slot_b") == V1
    assert "ota.part" not in snapshot()
    assert trial.boot_check(board, st, slots) == "trial"
    done = trial.commit(board, st, slots)
    assert done["md5"] == MD5["v2"] and done["version"] == "2.0" and done["counter"] == 2
    # the pointer is the one home of the installed version: settings are not written
    assert _missing("/pc/settings.json")
    assert slots.installed_artifact()["version"] == "2.0"
    assert st.get("counters") == {"app": 2}
    assert "trial" not in json.loads(fx.read("/pc/app.json"))
    assert trial.rollback(board, st, "late", slots) is False  # nothing on trial any more
    assert trial.commit(board, st, slots) is None


def test_gzip_bundle_installs():
    board, st, slots, ctx = device()
    installed(ctx, "v2gz")
    assert fx.tree(slots.active_app_dir()) == V2
    assert slots.installed_artifact()["md5"] == MD5["v2gz"]


def test_gzip_window_within_the_board_budget():
    # `ias bundle build --gzip` declares a 1 KiB window (wbits 10), within the smallest budget
    # (ESP8266); a bundle built for 4 KiB installs where the board affords it (ESP32: 12).
    assert tarstream.window_bits(fx.read(bundle("v2gz"))[:64]) == 10
    assert tarstream.window_bits(fx.read(bundle("v2gz12"))[:64]) == 12
    board, st, slots, ctx = device()
    assert board.deflate_wbits == 10
    e = refused(ctx, "v2gz12", "window_too_large")
    assert "4096-byte window" in str(e) and "affords 1024" in str(e), e
    board.deflate_wbits = 12
    installed(ctx, "v2gz12")
    assert fx.tree(slots.active_app_dir()) == V2


class _DeflateSpy:
    """The deflate module, recording the window of every DeflateIO made."""

    def __enter__(self):
        import deflate

        self.real = deflate
        self.windows = []
        self.GZIP = deflate.GZIP
        sys.modules["deflate"] = self
        return self

    def DeflateIO(self, stream, fmt, wbits=0):
        self.windows.append(wbits)
        return self.real.DeflateIO(stream, fmt, wbits)

    def __exit__(self, *exc):
        del sys.modules["deflate"]


def test_default_gzip_window_refused_before_it_is_allocated():
    # A default gzip (32 KiB window, not declared) on the ESP8266's budget: refused with its
    # reason and the device unchanged; no decompressor was made (no 32 KiB asked for).
    assert tarstream.window_bits(fx.read(bundle("v2gz_default"))[:64]) == 15
    board, st, slots, ctx = device()
    body = fx.read(bundle("v2gz_default"))
    for first in (2, 11, 12, 40):  # refused once its header is in, not after the whole body
        inst = appbundle.BundleInstaller(*ctx.args())
        inst.begin(len(body), "blink", "2.0")
        try:
            inst.write(memoryview(body)[:first])
            assert first < 12, first  # the 10-byte header and XLEN: all that it takes to know
            inst.write(memoryview(body)[first:100])
            raise AssertionError("the header of a default gzip was taken")
        except ReasonError as e:
            assert e.reason == "window_too_large", e
        inst.abort()
        assert inst.got == (first if first >= 12 else 100)
    with _DeflateSpy() as spy:
        e = refused(ctx, "v2gz_default", "window_too_large")
        assert "32768-byte window" in str(e), e
        assert spy.windows == []
        installed(ctx, "v2gz")  # the tool's bundle: decompressed with its 1 KiB window
        assert spy.windows == [10]
        board.deflate_wbits = 15  # a board that affords 32 KiB takes the default gzip
        installed(ctx, "v2gz_default")
        assert spy.windows == [10, 15]
    assert fx.tree(slots.active_app_dir()) == V2


def test_refusals_leave_the_device_unchanged():
    board, st, slots, ctx = device()
    installed(ctx, "v2")
    refused(ctx, "tampered", "hash_mismatch")
    refused(ctx, "badsig", "bad_signature")
    refused(ctx, "other", "bad_signature")
    refused(ctx, "v0", "old_counter")
    refused(ctx, "extra", "extra_file")
    refused(ctx, "missing", "missing_file")
    refused(ctx, "resized", "size_mismatch")
    refused(ctx, "no_manifest", "bad_manifest")
    refused(ctx, "traversal", "bad_archive")
    refused(ctx, "bad_manifest", "bad_manifest")
    refused(ctx, "sig_last", "unsigned")  # a signature that is not second is no signature
    refused(ctx, "unsigned", "unsigned")
    assert fx.tree(slots.active_app_dir()) == V2
    installed(ctx, "v3")  # the same counter is fine
    assert slots.installed_artifact()["version"] == "3.0"


def test_signature_is_checked_before_any_file_is_written():
    # _file() is where every app file or folder is created in the slot, plain or gzip body
    board, st, slots, ctx = device()
    calls = []
    orig = appbundle.BundleInstaller._file

    def spy(self, m):
        calls.append((self.manifest["version"], self.signed_by is not None, m.name))
        return orig(self, m)

    appbundle.BundleInstaller._file = spy
    try:
        for name in ("badsig", "other", "unsigned", "bad_manifest"):
            try:
                fx.install(ctx, bundle(name))
            except ReasonError:
                pass
            assert fx.tree("/pc/" + slots.inactive()) is None, name  # not even the folder
        assert calls == [], calls
        installed(ctx, "v2")
        assert calls and all(c[:2] == ("2.0", True) for c in calls), calls
        del calls[:]
        installed(ctx, "v2gz")
        assert calls and all(c[:2] == ("2.0", True) for c in calls), calls
    finally:
        appbundle.BundleInstaller._file = orig


def test_any_chunking_plain_streams_gzip_stages():
    # plain tar: parsed as it arrives, never staged; gzip: staged. Any chunk size, down to 1.
    board, st, slots, ctx = device()
    for name, chunk in (("v2", 1), ("v2", 4093), ("v2gz", 1), ("v2gz", 513)):
        data = fx.read(bundle(name))
        inst = fx.installer(data[:chunk], ctx)
        inst.begin(len(data), "blink", "2.0")
        staged = False
        for i in range(0, len(data), chunk):
            inst.write(memoryview(data)[i : i + chunk])
            staged = staged or _exists("/pc/ota.part")
        assert staged == (name == "v2gz"), (name, chunk, staged)
        inst.finish(MD5[name])
        inst.activate()
        assert fx.tree(slots.active_app_dir()) == V2, (name, chunk)
        assert "ota.part" not in snapshot()
        assert trial.boot_check(board, st, slots) == "trial"
        assert trial.commit(board, st, slots)["md5"] == MD5[name]


def _missing(path):
    return not _exists(path)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def test_damaged_bodies_are_refused():
    board, st, slots, ctx = device()
    installed(ctx, "v1")
    v2 = fx.read(bundle("v2"))
    cases = (
        ("trailing", v2 + b"x"),  # after the end marker only zero padding may follow
        ("cut_in_a_file", v2[: len(v2) // 2]),
        ("cut_in_the_manifest", v2[:700]),
    )
    for label, data in cases:
        with open(FIX + "/" + label + ".tar", "wb") as f:
            f.write(data)
        e = refused(ctx, label, "bad_archive")
        print("%s: %s" % (label, e))
    # the device still takes the real update afterwards
    installed(ctx, "v2")
    assert fx.tree(slots.active_app_dir()) == V2


def test_gzip_bomb_stops_at_the_bound_its_manifest_declares():
    # 4 KB of gzip holding the signed v2 and 4 MiB of zeros after the tar's end: inflation
    # stops within one buffer of the bound (the manifest's files, their headers, the end marker
    # and one tar record of padding), the device is unchanged and still takes a real update.
    board, st, slots, ctx = device()
    installed(ctx, "v1")
    made = []

    def make(first):
        made.append(fx.installer(first, ctx))
        return made[-1]

    before = snapshot()
    t0 = time.ticks_ms()
    try:
        fx.install(ctx, bundle("bomb"), make=make)
        raise AssertionError("the bomb was installed")
    except ReasonError as e:
        assert e.reason == "too_large", e
    ms = time.ticks_diff(time.ticks_ms(), t0)
    assert snapshot() == before
    inst = made[0]
    plain = len(fx.read(bundle("v2")))
    assert inst.bound <= plain + 2 * tarstream.MAX_TRAILING, (inst.bound, plain)
    assert plain <= inst.fed <= inst.bound + appbundle.BUF, (inst.fed, inst.bound)
    print(
        "bomb: %d bytes sent, %d inflated (of %d), bound %d, %d ms"
        % (len(fx.read(bundle("bomb"))), inst.fed, plain + 4 * 1024 * 1024, inst.bound, ms)
    )
    # re-padded (zeros within a tar record) and re-compressed copies of v2 still install
    installed(ctx, "v2pad")
    assert fx.tree(slots.active_app_dir()) == V2
    board.deflate_wbits = 12
    installed(ctx, "v2gz9")
    assert fx.tree(slots.active_app_dir()) == V2


def test_abort_in_the_middle_leaves_the_device_as_before():
    board, st, slots, ctx = device()
    installed(ctx, "v1")
    for name in ("v2", "v2gz"):
        before = snapshot()
        data = fx.read(bundle(name))
        inst = fx.installer(data[:512], ctx)
        inst.begin(len(data), "blink", "2.0")
        inst.write(memoryview(data)[: len(data) * 2 // 3])  # files are in the slot by now
        inst.abort()
        assert snapshot() == before, name


def test_unsigned_policy():
    board, st, slots, ctx = device()
    allow = {"allow_unsigned": True}
    esp8266 = Ctx(FakeBoard(tls_verifies=False), st, slots, allow, verified=True)
    e = refused(esp8266, "unsigned", "unsigned")
    assert "cannot verify" in str(e)
    refused(Ctx(board, st, slots, allow, verified=False), "unsigned", "unsigned")
    off = {"allow_unsigned": False}
    refused(Ctx(board, st, slots, off, verified=True), "unsigned", "unsigned")
    # a bad signature is refused even where unsigned bundles would be allowed
    refused(Ctx(board, st, slots, allow, verified=True), "other", "bad_signature")
    # ESP8266 with a good signature over an unverified connection: fine
    installed(Ctx(FakeBoard(tls_verifies=False), st, slots, {}, verified=False), "v1")
    installed(Ctx(board, st, slots, allow, verified=True), "unsigned")
    assert slots.installed_artifact()["md5"] == MD5["unsigned"]
    assert fx.tree(slots.active_app_dir()) == V2


def test_no_keys_means_signed_bundles_cannot_install():
    board, st, slots, ctx = device(keys=())
    refused(ctx, "v2", "unsigned")


def test_space_and_size_limits():
    board, st, slots, ctx = device()
    inst = appbundle.BundleInstaller(*ctx.args())
    try:
        inst.begin(10 * 1024 * 1024, "blink", "9")
        raise AssertionError("10 MiB staged on a 512 KiB flash")
    except ReasonError as e:
        assert e.reason == "no_space"
    inst = appbundle.BundleInstaller(*ctx.args())
    inst.begin(100, "blink", "9")
    try:
        inst.write(memoryview(bytearray(101)))
        raise AssertionError("more than announced accepted")
    except ReasonError as e:
        assert e.reason == "too_large"
    inst.abort()
    assert "ota.part" not in snapshot()


def test_installer_choice():
    board, st, slots, ctx = device()
    plain = fx.installer(fx.read(bundle("v2"))[:512], ctx)
    gz = fx.installer(fx.read(bundle("v2gz"))[:16], ctx)
    assert isinstance(plain, appbundle.BundleInstaller)
    assert isinstance(gz, appbundle.BundleInstaller)
    fw = fx.installer(b"\xe9\x03" + bytes(600), ctx)
    assert isinstance(fw, fwimage.FirmwareInstaller)
    try:
        fx.installer(b"<html>" + bytes(600), ctx)
        raise AssertionError("HTML taken for an update")
    except ReasonError as e:
        assert e.reason == "unknown_format"


def trial_device():
    board, st, slots, ctx = device()
    installed(ctx, "v1")
    fx.install(ctx, bundle("v2"))
    return board, st, slots, ctx


def test_trial_three_boots_then_rollback():
    board, st, slots, ctx = trial_device()
    board.cause = "intended"
    assert trial.boot_check(board, st, slots) == "trial"
    board.cause = "power_on"
    assert trial.boot_check(board, st, slots) == "trial"
    assert trial.boot_check(board, st, slots) == "trial"
    assert slots.active() == "slot_a"
    assert trial.boot_check(board, st, slots) == "rolled_back"
    assert slots.active() == "slot_b" and fx.tree(slots.active_app_dir()) == V1
    assert slots.installed_artifact()["md5"] == MD5["v1"]
    assert "3 boots" in trial.last_error(st)
    assert trial.boot_check(board, st, slots) is None
    trial.clear_error(st)
    assert trial.last_error(st) is None
    assert slots.installed_artifact()["version"] == "1.0" and _missing("/pc/settings.json")


def test_trial_crash_or_watchdog_rolls_back():
    for cause in ("crash", "watchdog"):
        board, st, slots, ctx = trial_device()
        board.cause = "intended"
        assert trial.boot_check(board, st, slots) == "trial"
        board.cause = cause
        assert trial.boot_check(board, st, slots) == "rolled_back"
        assert slots.active() == "slot_b"
        assert cause in trial.last_error(st) and "2.0" in trial.last_error(st)
        assert board.resets == 0  # before the app starts: no reset needed


def test_trial_ten_minutes():
    board, st, slots, ctx = trial_device()
    assert trial.boot_check(board, st, slots) == "trial"
    board.uptime = 599000
    assert trial.tick(board, st, slots) is False
    board.uptime = 600001
    try:
        trial.tick(board, st, slots)
        raise AssertionError("no reset after the deadline")
    except Reset:
        pass
    assert slots.active() == "slot_b" and "10 minutes" in trial.last_error(st)


def test_trial_time_is_uptime_not_the_clock():
    # Design §1 rule 7: an NTP answer ten years ahead during a trial boot (the clock set and
    # synced) neither ends the trial from the loop nor at the next boot; the release commits.
    board, st, slots, ctx = trial_device()
    board.cause = "intended"
    assert trial.boot_check(board, st, slots) == "trial"
    board.now += 10 * 365 * 86400
    board.clock_synced = True
    board.uptime = 30000
    assert trial.tick(board, st, slots) is False
    board.cause = "power_on"
    board.uptime = 1000
    assert trial.boot_check(board, st, slots) == "trial"
    assert trial.tick(board, st, slots) is False
    assert slots.active() == "slot_a" and trial.last_error(st) is None
    assert trial.commit(board, st, slots)["version"] == "2.0"
    assert trial.refused(st) == [] and slots.trial() is None


def _trial_runs_out(board, st, slots, reason):
    """A trial boot whose contact failed with `reason` (None: none noted), then the trial
    runs out of boots."""
    board.cause = "power_on"
    for _ in range(trial.TRIAL_BOOTS):
        assert trial.boot_check(board, st, slots) == "trial"
        if reason is not None:
            trial.note_contact(st, slots, reason)
    assert trial.boot_check(board, st, slots) == "rolled_back"


def _refused_clearing_the_inactive_slot(ctx, name):
    """The first refusal after a rollback: begin() has cleared the inactive slot (the failed
    version's files, docs/installing.md) before the manifest names the release."""
    before = snapshot()
    try:
        fx.install(ctx, bundle(name))
        raise AssertionError("%s was installed" % name)
    except ReasonError as e:
        assert e.reason == "failed_trial", e
    after = snapshot()
    inactive = ctx.slots.inactive() + "/"
    assert all(p.startswith(inactive) for p in set(before) ^ set(after))
    assert {p: d for p, d in before.items() if not p.startswith(inactive)} == {
        p: d for p, d in after.items() if not p.startswith(inactive)
    }


def test_refused_by_signed_identity_not_transfer_bytes():
    # v2 fails its trial (a crash): the same signed release in other bytes (re-padded,
    # re-compressed: other MD5s) is refused when its manifest arrives, before any file.
    board, st, slots, ctx = trial_device()
    board.cause = "intended"
    assert trial.boot_check(board, st, slots) == "trial"
    board.cause = "crash"
    assert trial.boot_check(board, st, slots) == "rolled_back"
    refused_list = trial.refused(st)
    assert MD5["v2"] in refused_list
    ident = [k for k in refused_list if k.startswith("blink 2.0 2 ")]
    assert len(ident) == 1 and len(ident[0].split()[3]) == 32, refused_list
    board.deflate_wbits = 12
    _refused_clearing_the_inactive_slot(ctx, "v2pad")
    for name in ("v2pad", "v2gz", "v2gz9"):
        assert MD5[name] != MD5["v2"] and MD5[name] not in refused_list
        e = refused(ctx, name, "failed_trial")  # and nothing at all changes
        assert "2.0 failed its trial" in str(e), e
    # another release is not affected
    fx.install(ctx, bundle("v3"))
    assert slots.read()["version"] == "3.0"


def test_network_blocked_trial_retried_then_refused():
    # Each trial that ran out while its call homes failed for the network's sake is retried
    # (nothing refused); after NET_RETRIES of them the release is refused like any other.
    board, st, slots, ctx = trial_device()
    for n in range(1, trial.NET_RETRIES + 1):
        _trial_runs_out(board, st, slots, "timeout")
        assert "retried later" in trial.last_error(st) and trial.refused(st) == []
        assert st.get(trial.RETRY_KEY)[1] == n
        fx.install(ctx, bundle("v2"))  # taken again
    _trial_runs_out(board, st, slots, "dns")
    assert "retried later" not in trial.last_error(st)
    assert MD5["v2"] in trial.refused(st)
    _refused_clearing_the_inactive_slot(ctx, "v2gz")
    # The reason decides: a server or content fault, or no contact at all, is the release's.
    for reason in ("bad_signature", "http_status", None):
        board, st, slots, ctx = trial_device()
        _trial_runs_out(board, st, slots, reason)
        assert MD5["v2"] in trial.refused(st), reason
    # A crash is the release's fault even when its call homes also failed on the network.
    board, st, slots, ctx = trial_device()
    board.cause = "intended"
    assert trial.boot_check(board, st, slots) == "trial"
    trial.note_contact(st, slots, "timeout")
    board.cause = "crash"
    assert trial.boot_check(board, st, slots) == "rolled_back"
    assert MD5["v2"] in trial.refused(st) and "retried" not in trial.last_error(st)
    # A network-blocked trial that is retried and then confirmed leaves no trace.
    board, st, slots, ctx = trial_device()
    _trial_runs_out(board, st, slots, "unreachable")
    fx.install(ctx, bundle("v2"))
    assert trial.boot_check(board, st, slots) == "trial"
    trial.commit(board, st, slots)
    assert st.get(trial.RETRY_KEY) is None and st.get(trial.CONTACT_KEY) is None


def test_app_error_rollback_from_the_main_loop():
    board, st, slots, ctx = trial_device()
    assert trial.boot_check(board, st, slots) == "trial"
    try:
        trial.rollback(board, st, "app.py raised ImportError", slots)
        raise AssertionError("rollback must reset the board")
    except Reset:
        pass
    assert slots.active() == "slot_b" and "ImportError" in trial.last_error(st)


def test_install_during_a_trial():
    from ias import device

    board, st, slots, ctx = trial_device()
    assert trial.boot_check(board, st, slots) == "trial"
    # installers never commit: while v2 is on trial they refuse, verified source or not
    refused(Ctx(board, st, slots, {}, verified=True), "v3", "trial_pending")
    refused(Ctx(board, st, slots, {}, verified=False), "v3", "trial_pending")
    settings = {"app_name": "blink", "app_version": "1.0"}
    dev = device.Device(board, settings, st, None, slots)
    make = dev._make_installer()
    # the device's factory: an answer from a source not authenticated cannot confirm the trial
    before = snapshot()
    try:
        fx.install(ctx, bundle("v3"), make=lambda first: make(first, False))
        raise AssertionError("installed during a trial without confirmation")
    except ReasonError as e:
        assert e.reason == "trial_pending"
    assert snapshot() == before and st.get("counters") == {"app": 1}
    # a trusted answer carrying the next update is the contact the trial waited for: the
    # device commits v2, then installs v3
    fx.install(ctx, bundle("v3"), hex_sha=True, make=lambda first: make(first, True))
    assert settings == {"app_name": "blink", "app_version": "1.0"}  # settings are not written
    assert st.get("counters") == {"app": 2}
    assert board.resets == 0
    info = json.loads(fx.read("/pc/app.json"))
    assert info["version"] == "3.0" and info["prev"]["version"] == "2.0"
    assert fx.tree("/pc/" + info["prev"]["active"]) == V2


def _heap_run(fix, name, heap):
    """One install of fix/name.tar in a child micropython limited to `heap` bytes, running the
    firmware as .mpy as a device does: (ok, base, peak) with the live heap sampled at flash ops."""
    out = "%s/heap-%s-%d.txt" % (fix, name, heap)
    cmd = "cd %s && MICROPYPATH=%s/mpy:.frozen %s -X heapsize=%d -m ota_heaprun %s %s > %s 2>&1"
    os.system(cmd % (fix, fix, sys.executable, heap, fix, name, out))
    text = fx.read(out).decode()
    if "\nOK" not in text:
        return False, 0, 0
    line = [x for x in text.split("\n") if x.startswith("HEAP ")][0]
    vals = dict(p.split("=") for p in line.split()[1:])
    return True, int(vals["base"]), int(vals["peak"])


def _floor(fix, name, lo=48 * 1024, hi=144 * 1024, step=4096):
    ok, base, peak = _heap_run(fix, name, hi)
    assert ok, fx.read("%s/heap-%s-%d.txt" % (fix, name, hi))
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if _heap_run(fix, name, mid)[0]:
            hi = mid
        else:
            lo = mid
    return hi, base, peak


def test_install_heap_does_not_grow_with_payload():
    fix = fx.make("big")
    try:
        os.mkdir(fix + "/mpy")
        mods = [
            fx.REPO + "/firmware/" + m
            for m in (
                "slots",
                "trial",
                "installer",
                "formats",
                "appbundle",
                "fwimage",
                "tarstream",
                "trust",
                "fsutil",
                "log",
                "state",
                "settings",
                "board",
                "reason",
            )
        ]
        mods += [fx.HERE + "/ota_fixtures", fx.HERE + "/ota_heaprun"]
        mods.append(fx.REPO + "/tools/vboard/nor")
        os.mkdir(fix + "/mpy/ias")
        for m in mods:
            name = m.rsplit("/", 1)[1]
            if "/firmware/" in m:
                name = "ias/" + name  # the client is the package ias, as on a device
            rc = os.system("%s -o %s/mpy/%s.mpy %s.py" % (fx.mpy_cross(), fix, name, m))
            assert rc == 0, m
        small = _floor(fix, "small")
        big = _floor(fix, "big")
        for label, r in (("small", small), ("big", big)):
            size = os.stat("%s/%s.tar" % (fix, label))[6]
            print(
                "%s bundle (%d bytes): heapsize floor %d KiB; live heap %d before, peak %d "
                "during install (+%d)" % (label, size, r[0] // 1024, r[1], r[2], r[2] - r[1])
            )
        assert big[0] - small[0] <= 4096, "heap floor grows with the payload"
        assert (big[2] - big[1]) - (small[2] - small[1]) < 2048, "peak grows with the payload"
    finally:
        fx.cleanup(fix)


def test_board_without_verifying_tls_takes_its_servers_word():
    # ESP8266: no verified TLS at all, so the device's factory commits on any answer
    from ias import device

    board, st, slots, ctx = trial_device()
    board.tls_verifies = False
    assert trial.boot_check(board, st, slots) == "trial"
    make = device.Device(board, {}, st, None, slots)._make_installer()
    fx.install(Ctx(board, st, slots, {}, False), bundle("v3"), make=lambda f: make(f, False))
    info = json.loads(fx.read("/pc/app.json"))
    assert info["version"] == "3.0" and info["prev"]["version"] == "2.0"
    assert st.get("counters") == {"app": 2}


def test_installed_version_has_one_home():
    # the pointer names what runs; settings app_name/app_version only name the factory app,
    # read when the pointer has no record of its own
    board, st, slots, ctx = device()
    with open("/pc/settings.json", "w") as f:
        json.dump({"app_name": "factory", "app_version": "0.1"}, f)
    assert slots_mod.Slots(ROOT).installed_artifact()["version"] == "0.1"
    given = slots_mod.Slots(ROOT, {"app_name": "given", "app_version": "0.2"})
    assert given.installed_artifact()["name"] == "given"
    installed(ctx, "v1")
    fx.install(ctx, bundle("v2"))  # on trial: v2 runs and is reported, v1 is committed
    s = slots_mod.Slots(ROOT, {"app_name": "given", "app_version": "0.2"})
    assert s.installed_artifact()["version"] == "2.0" and s.committed()["version"] == "1.0"
    assert trial.counter_floor(st, s, "app") == 1
    trial.rollback(board, st, "test", s, reset=False)
    assert s.installed_artifact()["version"] == "1.0" and s.committed()["version"] == "1.0"
    assert json.loads(fx.read("/pc/settings.json"))["app_version"] == "0.1"  # never written


def test_zz_cleanup():
    fx.unmount(ROOT)
    fx.cleanup(FIX)
