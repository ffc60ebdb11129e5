# ESP32 firmware images on the virtual partitions (vpartition.py): a valid image is written to
# the next slot, read back, set to boot and gets exactly one trial boot; a commit marks it
# valid; a reset during the trial makes the bootloader go back, and trial.boot_check records it.
# A combined firmware.bin, a corrupt or truncated image and unsigned-policy cases are refused.
# otadata.bin holds the two esp_ota_select_entry_t sectors, checked byte for byte.
import os
import time

import ota_fixtures as fx
from ias import slots as slots_mod
from ias import state as state_mod
from ias import trial, vpartition
from ias.reason import ReasonError
from ias.vpartition import VirtualPartition
from ota_fixtures import Ctx, FakeBoard, Reset

FIX = fx.make("firmware")
SLOT = 256 * 1024


def host():
    """A virtual board folder: ota_0 holds v1, ota_1 is erased, otadata is blank (as after
    flashing: the first bootloader pass records ota_0 valid)."""
    h = "/tmp/ias-vp-%d" % time.time_ns()
    os.mkdir(h)
    os.mkdir(h + "/root")
    v1 = fx.read(FIX + "/fw_v1.bin")
    with open(h + "/ota_0.bin", "wb") as f:
        f.write(v1 + b"\xff" * (SLOT - len(v1)))
    return h


def device(allow=True, verified=True):
    h = host()
    board = FakeBoard(host=h)
    st = state_mod.State(h + "/root/state.json")
    slots = slots_mod.Slots(h + "/root")
    return h, board, st, slots, Ctx(board, st, slots, {"allow_unsigned": allow}, verified)


def otadata(h):
    """{"states": {label: state}, "raw": the otadata partition's bytes (None before any)}."""
    try:
        raw = fx.read(h + "/otadata.bin")
    except OSError:
        raw = None
    return {"states": vpartition.slot_states(h), "raw": raw}


def image(name):
    return FIX + "/fw_" + name + ".bin"


def md5_of(path):
    import binascii
    import hashlib

    return binascii.hexlify(hashlib.md5(fx.read(path)).digest()).decode()


def test_valid_image_boots_once_and_commits():
    h, board, st, slots, ctx = device()
    assert vpartition.bootloader_select(h)["slot"] == "ota_0"
    fx.install(ctx, image("v2"), chunk=1000)
    d = otadata(h)
    assert d["states"] == {"ota_0": "valid", "ota_1": "new"}
    assert VirtualPartition(h, VirtualPartition.RUNNING).label == "ota_0"
    assert VirtualPartition(h, VirtualPartition.BOOT).label == "ota_1"
    # the ESP-IDF layout: sector 0 keeps seq 1 (ota_0, VALID), sector 1 gets seq 2 (ota_1, NEW)
    assert d["raw"][:32] == vpartition.entry_bytes(1, vpartition.VALID)
    assert d["raw"][4096 : 4096 + 32] == vpartition.entry_bytes(2, vpartition.NEW)
    assert d["raw"][4096 + 28 : 4096 + 32] == b"\x74\x37\xf6\x55"  # CRC-32 of seq 2
    assert len(d["raw"]) == 8192 and d["raw"][32:4096] == b"\xff" * (4096 - 32)
    v2 = fx.read(image("v2"))
    got = bytearray(len(v2))
    VirtualPartition(h, "ota_1").readblocks(0, got)
    assert got == v2
    info = vpartition.bootloader_select(h)
    assert info["slot"] == "ota_1" and info["state"] == "pending_verify"
    assert info["version"] == "v2.0"
    assert trial.boot_check(board, st, slots) == "trial"
    art = trial.commit(board, st, slots)
    assert art["md5"] == md5_of(image("v2")) and art["size"] == len(v2)
    assert otadata(h)["states"]["ota_1"] == "valid"
    assert vpartition.bootloader_select(h)["slot"] == "ota_1"  # stays after more resets
    assert vpartition.bootloader_select(h)["slot"] == "ota_1"
    assert trial.boot_check(board, st, slots) is None
    fx.cleanup(h)


def test_reset_during_trial_goes_back_and_is_reported():
    h, board, st, slots, ctx = device()
    vpartition.bootloader_select(h)
    before = slots.installed_artifact()
    fx.install(ctx, image("v2"))
    assert vpartition.bootloader_select(h)["slot"] == "ota_1"
    assert trial.boot_check(board, st, slots) == "trial"
    # the new firmware never confirms: the next hard reset aborts it
    info = vpartition.bootloader_select(h)
    assert info["slot"] == "ota_0" and info["version"] == "v1.0"
    assert otadata(h)["states"]["ota_1"] == "aborted"
    assert trial.boot_check(board, st, slots) == "rolled_back"
    assert "failed its trial boot" in trial.last_error(st)
    assert slots.installed_artifact() == before
    assert vpartition.bootloader_select(h)["slot"] == "ota_0"  # never again
    fx.cleanup(h)


def test_rollback_during_firmware_trial_resets():
    h, board, st, slots, ctx = device()
    vpartition.bootloader_select(h)
    fx.install(ctx, image("v2"))
    vpartition.bootloader_select(h)
    assert trial.boot_check(board, st, slots) == "trial"
    try:
        trial.rollback(board, st, "no verified call home", slots, reset=False)
        raise AssertionError("a firmware rollback must reset")
    except Reset:
        pass
    assert vpartition.bootloader_select(h)["slot"] == "ota_0"
    assert trial.boot_check(board, st, slots) is None
    assert "no verified call home" in trial.last_error(st)
    fx.cleanup(h)


def test_interrupted_switch_is_recorded():
    h, board, st, slots, ctx = device()
    vpartition.bootloader_select(h)
    inst = fx.install(ctx, image("v2"), activate=False)
    inst.target.set_boot = lambda: None  # power lost between the pointer and set_boot()
    inst.activate()
    vpartition.bootloader_select(h)
    assert trial.boot_check(board, st, slots) == "rolled_back"
    assert "never started on ota_1; the bootloader runs ota_0" in trial.last_error(st)
    fx.cleanup(h)


def refused(ctx, h, name, reason):
    before = otadata(h)
    try:
        fx.install(ctx, image(name))
    except ReasonError as e:
        assert e.reason == reason, "%s: want %s, got %r" % (name, reason, e)
        assert otadata(h) == before
        assert ctx.slots.trial() is None
        return e
    raise AssertionError("%s installed; want %s" % (name, reason))


def test_bad_images_are_refused():
    h, board, st, slots, ctx = device()
    vpartition.bootloader_select(h)
    e = refused(ctx, h, "combined", "combined_image")
    assert "micropython.bin" in str(e)
    refused(ctx, h, "nodesc", "not_app_image")
    refused(ctx, h, "corrupt", "not_app_image")
    refused(ctx, h, "truncated", "not_app_image")
    inst = fx.installer(b"\xe9", ctx)
    try:
        inst.begin(SLOT + 1, "fw", "9")
        raise AssertionError("image larger than the slot accepted")
    except ReasonError as e:
        assert e.reason == "too_large"
    fx.cleanup(h)


def test_set_boot_validates_independently():
    h, board, st, slots, ctx = device()
    part = VirtualPartition(h, "ota_1")
    for name in ("corrupt", "truncated", "nodesc"):
        data = fx.read(image(name))
        buf = bytearray(((len(data) + 4095) // 4096) * 4096)
        buf[:] = b"\xff" * len(buf)
        buf[: len(data)] = data
        part.writeblocks(0, buf)
        try:
            part.set_boot()
            raise AssertionError("set_boot accepted %s" % name)
        except OSError as e:
            assert e.args[0] == -5379, e
    assert "ota_1" not in otadata(h)["states"]
    fx.cleanup(h)


def test_unsigned_policy_for_firmware():
    for allow, verified, tls in ((False, True, True), (True, False, True), (True, True, False)):
        h, board, st, slots, ctx = device(allow, verified)
        board.tls_verifies = tls
        refused(ctx, h, "v2", "unsigned")
        fx.cleanup(h)
    ctx = Ctx(FakeBoard(), None, slots_mod.Slots("/tmp"), {"allow_unsigned": True})
    try:
        fx.installer(b"\xe9", ctx).begin(1000, "fw", "1")
        raise AssertionError("firmware on a board without OTA slots")
    except ReasonError as e:
        assert e.reason == "no_firmware_ota"


class _Flaky(VirtualPartition):
    def writeblocks(self, n, buf, off=None):
        if n == 2:
            buf = bytearray(buf)
            buf[7] ^= 0x10  # a bit that did not program
        VirtualPartition.writeblocks(self, n, buf, off)


def test_read_back_catches_bad_flash():
    h, board, st, slots, ctx = device()
    vpartition.bootloader_select(h)
    running = board.running_partition
    board.running_partition = lambda: _wrap(running())
    try:
        fx.install(ctx, image("v2"))
        raise AssertionError("a flash write error went unnoticed")
    except ReasonError as e:
        assert e.reason == "verify_failed", e
    assert "ota_1" not in otadata(h)["states"]
    fx.cleanup(h)


def _wrap(part):
    part.get_next_update = lambda: _Flaky(part.host, "ota_1")
    return part


def test_bootloader_blank_otadata_and_erase_semantics():
    h = host()
    assert otadata(h)["raw"] is None
    info = vpartition.bootloader_select(h)
    assert info["slot"] == "ota_0" and otadata(h)["states"]["ota_0"] == "valid"
    raw = otadata(h)["raw"]  # set_actual_ota_seq: seq 1, VALID, in sector 0 only
    assert raw[:32] == vpartition.entry_bytes(1, vpartition.VALID)
    assert raw[28:32] == b"\x9a\x98\x43\x47" and raw[4096:] == b"\xff" * 4096
    p = VirtualPartition(h, VirtualPartition.RUNNING).get_next_update()
    assert p.info()[4] == "ota_1" and p.ioctl(5, 0) == 4096
    p.writeblocks(0, b"\x0f" * 4096)
    p.writeblocks(0, b"\xf1" * 16, 0)  # no erase: bits only clear
    got = bytearray(16)
    p.readblocks(0, got)
    assert got == b"\x01" * 16
    p.ioctl(6, 0)
    p.readblocks(0, got)
    assert got == b"\xff" * 16
    try:
        p.writeblocks(0, b"\x00" * 100)
        raise AssertionError("a partial-block erase write was accepted")
    except OSError:
        pass
    fx.cleanup(h)


def test_zz_cleanup():
    fx.cleanup(FIX)
