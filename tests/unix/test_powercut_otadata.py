# The virtual ESP32's otadata (vpartition.py) cut at every flash operation of its writes: the
# app's set_boot() and mark_app_valid_cancel_rollback(), and the bootloader's own state changes
# (blank otadata recorded, NEW -> PENDING_VERIFY, PENDING_VERIFY -> ABORTED). Each write is an
# erase of the entry's sector and a program of its 32 bytes, both ops on tools/vboard/nor.py's
# NorFlash, which lands the cut op torn (half of it) or not at all. After every cut the board is
# powered on again (two bootloader passes, no cut): it boots the old or the new slot, holding a
# valid image, never neither.
import os
import time

import ota_fixtures as fx
from ias import vpartition
from ias.vpartition import VirtualPartition
from nor import NorFlash, PowerCut

FIX = fx.make("firmware")
SLOT = 256 * 1024


def board():
    """ota_0 holds v1, ota_1 holds v2 (written, not yet set to boot)."""
    h = "/tmp/ias-vpcut-%d" % time.time_ns()
    os.mkdir(h)
    for label, name in (("ota_0", "v1"), ("ota_1", "v2")):
        data = fx.read(FIX + "/fw_" + name + ".bin")
        with open(h + "/" + label + ".bin", "wb") as f:
            f.write(data + b"\xff" * (SLOT - len(data)))
    return h


def ram_otadata(h, image):
    dev = NorFlash.from_image(bytearray(image))
    vpartition.use_otadata_device(h, dev)
    return dev


def run_steps(h, steps):
    for step in steps:
        if step == "boot":
            vpartition.bootloader_select(h)
        elif step == "valid":
            VirtualPartition(h, VirtualPartition.RUNNING).mark_app_valid_cancel_rollback()
        else:  # "set_boot ota_N"
            VirtualPartition(h, step.split()[1]).set_boot()


def prepared(h, steps):
    """The otadata bytes after `steps` on a blank partition (no cut)."""
    dev = ram_otadata(h, b"\xff" * 8192)
    run_steps(h, steps)
    return bytes(dev.mem)


def sweep(h, start, steps, old, new):
    """Cut at op 1, 2, ... of `steps` from otadata `start`, torn and clean. Returns
    ({"old": n, "new": n}, ops of the whole sequence)."""
    outcomes = {}
    total = None
    for torn in (True, False):
        n = 1
        while True:
            dev = ram_otadata(h, start)
            dev.cut_at = n
            dev.torn = torn
            done = False
            try:
                run_steps(h, steps)
                done = True
            except PowerCut:
                pass
            ram_otadata(h, dev.mem)  # power on again: what the flash kept, no cut
            first = vpartition.bootloader_select(h)
            again = vpartition.bootloader_select(h)
            for got in (first, again):
                assert got["slot"] in (old, new), (n, torn, got)
                path = h + "/" + got["slot"] + ".bin"
                assert vpartition.check_image(path, SLOT) is None, (n, got)
            label = "new" if first["slot"] == new else "old"
            key = label + (" torn" if torn else "")
            outcomes[key] = outcomes.get(key, 0) + 1
            if done:
                total = n - 1
                break
            n += 1
    vpartition.use_otadata_device(h, None)
    return outcomes, total


def report(name, outcomes, ops):
    print("otadata sweep, %s: %d flash ops, outcomes %r" % (name, ops, outcomes))


def test_first_boot_records_ota_0():
    h = board()
    outcomes, ops = sweep(h, b"\xff" * 8192, ["boot"], "ota_0", "ota_1")
    report("first boot on blank otadata", outcomes, ops)
    assert ops == 2 and set(outcomes) == {"old", "old torn"}
    fx.cleanup(h)


def test_update_trial_and_commit():
    h = board()
    start = prepared(h, ["boot"])  # ota_0 running, seq 1 valid
    steps = ["set_boot ota_1", "boot", "valid", "boot"]
    outcomes, ops = sweep(h, start, steps, "ota_0", "ota_1")
    report("set_boot, trial boot, mark valid", outcomes, ops)
    assert ops == 6, ops  # three writes of an entry: erase + program each
    assert outcomes["new"] >= 1 and outcomes["old"] >= 1, outcomes
    # cut nowhere: the new slot stays, valid, in the sector set_boot wrote
    ram_otadata(h, start)
    run_steps(h, steps)
    assert vpartition.slot_states(h) == {"ota_0": "valid", "ota_1": "valid"}
    entries = vpartition.read_entries(h)
    assert (entries[1].seq, entries[1].state) == (2, vpartition.VALID)
    vpartition.use_otadata_device(h, None)
    fx.cleanup(h)


def test_update_whose_trial_fails_goes_back():
    h = board()
    start = prepared(h, ["boot"])
    steps = ["set_boot ota_1", "boot", "boot"]  # the trial boot resets unconfirmed
    outcomes, ops = sweep(h, start, steps, "ota_0", "ota_1")
    report("set_boot, trial boot, reset without mark valid", outcomes, ops)
    assert ops == 6, ops
    ram_otadata(h, start)
    run_steps(h, steps)
    assert vpartition.bootloader_select(h)["slot"] == "ota_0"
    assert vpartition.slot_states(h) == {"ota_0": "valid", "ota_1": "aborted"}
    vpartition.use_otadata_device(h, None)
    fx.cleanup(h)


def test_second_update_back_into_ota_0():
    h = board()
    start = prepared(h, ["boot", "set_boot ota_1", "boot", "valid", "boot"])  # ota_1 committed
    steps = ["set_boot ota_0", "boot", "valid", "boot"]
    outcomes, ops = sweep(h, start, steps, "ota_1", "ota_0")
    report("second update, ota_1 -> ota_0", outcomes, ops)
    assert outcomes["new"] >= 1 and outcomes["old"] >= 1, outcomes
    ram_otadata(h, start)
    run_steps(h, steps)
    entries = vpartition.read_entries(h)
    assert (entries[0].seq, entries[0].state) == (3, vpartition.VALID)  # seq 3 -> (3-1)%2 = 0
    vpartition.use_otadata_device(h, None)
    fx.cleanup(h)


def test_zz_cleanup():
    fx.cleanup(FIX)
