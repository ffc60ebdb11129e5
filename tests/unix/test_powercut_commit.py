# A trial's boot and commit cut at every program and erase op of the NOR flash: v1 committed,
# v2 on trial; the boot (trial.boot_check) and the device's commit (Device._healthy) run, and
# the power goes at op 1, 2, ... After each cut the board boots again, and three things must
# agree: the version that runs (the active slot's files, or the firmware the bootloader picks),
# the version the device reports (the call home's x-ESP-VERSION and the config page, both from
# the pointer) and the anti-rollback floor in force: all old (v2 still on trial, the floor at
# v1's counter; the next confirmation commits it) or all new, never a mix.
# Also: boot_check repairs a floor a cut left unraised, and the flash ops a commit costs.
# mptest: timeout=300
# mptest: heapsize=4m
import json
import os
import time

import ota_fixtures as fx
import powercut
from ias import callhome, configmode, device, trial, trust, vpartition
from ias import slots as slots_mod
from ias import state as state_mod
from idboard import IdentityBoard
from nor import NorFlash, mount
from ota_fixtures import Ctx, FakeBoard

FIX = fx.make("powercut", "firmware")
V1 = fx.tree(FIX + "/src_v1")
V2 = fx.tree(FIX + "/src_v2")
FILES = {"1.0": V1, "2.0": V2}
COUNTER = {"1.0": 1, "2.0": 2}  # the bundles' security counters (ota_mkfixtures.py)
SLOT = 256 * 1024


class Board(FakeBoard, IdentityBoard):
    """FakeBoard plus what the call home headers read."""


def parts(root, host=None):
    board = Board(host=host)
    st = state_mod.State(root + "/state.json")
    return board, st, slots_mod.Slots(root)


def reported(board, slots):
    """The version as the device reports it: x-ESP-VERSION of the call home and the config
    page's av; both must name the same one."""
    art = slots.installed_artifact()
    heads = dict(callhome.ias_headers(board, {"act_code": ""}, art))
    page = configmode.installed_info(slots)()
    assert heads["x-ESP-VERSION"] == "%s v%s" % (page["an"], page["av"]), (heads, page)
    return page["av"]


def commit_as_the_device_does(board, st, slots):
    device.Device(board, {}, st, None, slots)._healthy()


# -- app bundles ----------------------------------------------------------------------------------
def prepare_bundle(root):
    fx.copy_keys(FIX, ("update",), root)
    board, st, slots = parts(root)
    fx.install(Ctx(board, st, slots), FIX + "/v1.tar")
    trial.boot_check(board, st, slots)
    trial.commit(board, st, slots)
    fx.install(Ctx(board, st, slots), FIX + "/v2.tar")  # v2 now on trial, never booted


def boot_and_commit(root, host=None):
    board, st, slots = parts(root, host)
    r = trial.boot_check(board, st, slots)
    assert r == "trial", (r, slots.read())
    commit_as_the_device_does(board, st, slots)


def agree_bundle(root):
    """Boot again; check running, reported and floor agree. Returns "old", "new" or "new,
    floor repaired" (the cut came between the pointer write and the state's floor)."""
    board, st, slots = parts(root)
    cached = trust.counter_floor(st, "app")
    assert trial.boot_check(board, st, slots) in ("trial", None)
    running = [v for v, files in FILES.items() if fx.tree(slots.active_app_dir()) == files]
    assert running == ["2.0"], "the active slot holds neither version whole"
    assert reported(board, slots) == "2.0"  # what runs is what is reported, on trial or not
    committed = slots.committed().get("version")
    floor = trial.counter_floor(st, slots, "app")
    assert floor == COUNTER[committed], (floor, committed)
    # boot_check repaired the state's own floor, so nothing that reads it can see less
    assert trust.counter_floor(st, "app") == floor
    if slots.trial() is None:
        assert committed == "2.0"
        return "new" if cached == 2 else "new, floor repaired"
    assert committed == "1.0"  # v2 still on trial: its next confirmation commits it
    commit_as_the_device_does(board, st, slots)
    assert slots.trial() is None and trial.counter_floor(st, slots, "app") == 2
    assert trust.counter_floor(st, "app") == 2
    return "old"


def count_ops(image, host=None):
    """Flash ops of the trial boot and of the commit, run without a cut."""
    dev = NorFlash.from_image(image)
    mount(dev, powercut.WHERE)
    try:
        board, st, slots = parts(powercut.WHERE, host)
        trial.boot_check(board, st, slots)
        boot = dev.ops
        commit_as_the_device_does(board, st, slots)
        return boot, dev.ops - boot
    finally:
        import vfs

        vfs.umount(powercut.WHERE)


def test_bundle_commit_survives_every_cut():
    image = powercut.fresh_image(prepare_bundle, blocks=64)
    boot, commit = count_ops(image)
    print("flash ops: trial boot %d, commit %d (program + erase)" % (boot, commit))
    tried, outcomes = powercut.sweep(image, boot_and_commit, lambda r, c: agree_bundle(r))
    powercut.report("trial boot + commit of bundle v2", tried, outcomes)
    assert tried == boot + commit + 1  # every op was cut once, then the run completed
    assert outcomes.get("old", 0) >= 1 and outcomes.get("new", 0) >= 1, outcomes
    assert outcomes.get("new, floor repaired", 0) >= 1, outcomes  # the window was hit
    assert sum(outcomes.values()) == tried


def test_boot_check_repairs_an_unraised_floor():
    # a cut between the commit's pointer write and the state's floor: the pointer is committed
    # to v2 (counter 2), the state still says 1
    fx.unmount("/pc")
    fx.fresh_flash("/pc")
    fx.copy_keys(FIX, ("update",), "/pc")
    board, st, slots = parts("/pc")
    fx.install(Ctx(board, st, slots), FIX + "/v1.tar")
    trial.boot_check(board, st, slots)
    trial.commit(board, st, slots)
    fx.install(Ctx(board, st, slots), FIX + "/v2.tar")
    trial.boot_check(board, st, slots)
    info = dict(slots.read())
    del info["trial"], info["prev"]
    slots.write(info)  # the commit's pointer write, and the power goes
    assert st.get("counters") == {"app": 1}
    # the floor in force is already v2's: v1 (counter 1) is refused before any repair
    assert trial.counter_floor(st, slots, "app") == 2
    try:
        fx.install(Ctx(board, st, slots), FIX + "/v1.tar")
        raise AssertionError("v1 installed below the committed counter")
    except Exception as e:
        assert getattr(e, "reason", None) == "old_counter", e
    board, st, slots = parts("/pc")  # the next boot
    assert trial.boot_check(board, st, slots) is None
    assert st.get("counters") == {"app": 2}
    assert state_mod.State("/pc/state.json").get("counters") == {"app": 2}  # on flash
    assert trial.boot_check(board, st, slots) is None  # no write when in place
    fx.unmount("/pc")


# -- firmware -------------------------------------------------------------------------------------
def firmware_host():
    """A virtual board folder: ota_0 holds v1 (valid, running), ota_1 is erased."""
    h = "/tmp/ias-vp-%d" % time.time_ns()
    os.mkdir(h)
    v1 = fx.read(FIX + "/fw_v1.bin")
    with open(h + "/ota_0.bin", "wb") as f:
        f.write(v1 + b"\xff" * (SLOT - len(v1)))
    vpartition.bootloader_select(h)  # blank otadata: records ota_0 valid
    return h


def test_firmware_commit_survives_every_cut():
    h = firmware_host()

    def prepare(root):
        # no pointer yet: the factory firmware, named by settings (slots.py)
        with open(root + "/settings.json", "w") as f:
            json.dump({"app_name": "fw", "app_version": "v1.0"}, f)
        board, st, slots = parts(root, h)
        ctx = Ctx(board, st, slots, {"allow_unsigned": True})
        fx.install(ctx, FIX + "/fw_v2.bin", chunk=1000, name="fw", version="v2.0")

    image = powercut.fresh_image(prepare, blocks=64)
    assert vpartition.bootloader_select(h)["slot"] == "ota_1"  # the reset into v2's trial
    otadata = fx.read(h + "/otadata.bin")
    booted = fx.read(h + "/booted")  # the slot the trial boot runs from

    def on_trial_boot(root):
        with open(h + "/otadata.bin", "wb") as f:  # the partitions as the trial boot left them
            f.write(otadata)
        with open(h + "/booted", "wb") as f:
            f.write(booted)
        boot_and_commit(root, h)

    def agree(root, completed):
        vpartition.bootloader_select(h)  # the board resets after the cut
        board, st, slots = parts(root, h)
        trial.boot_check(board, st, slots)
        running = vpartition.bootloader_select(h)["version"]  # what the bootloader starts
        assert reported(board, slots) == running
        assert slots.trial() is None  # nothing left pending either way
        assert trial.counter_floor(st, slots, "firmware") == 0  # images carry no counter
        return "new" if running == "v2.0" else "old"

    boot, commit = count_ops(image, h)
    print("firmware flash ops: trial boot %d, commit %d (pointer on littlefs)" % (boot, commit))
    tried, outcomes = powercut.sweep(image, on_trial_boot, agree)
    powercut.report("trial boot + commit of firmware v2", tried, outcomes)
    assert outcomes.get("old", 0) >= 1 and outcomes.get("new", 0) >= 1, outcomes
    fx.cleanup(h)


def test_zz_cleanup():
    fx.cleanup(FIX)
