"""Issue 15 item 5, end to end: firmware A/B on a virtual ESP32 running the real client against
`ias serve` over verified TLS. A firmware image (ESP-IDF app layout with its appended SHA-256)
is written to the next OTA slot, set to boot, and the bootloader boots it on trial (its console
line names the slot); the trial's verified call home marks it valid and commits the pointer. A
firmware that panics at start, and one whose trial cannot make a verified call home, are rolled
back by the bootloader's otadata states (PENDING_VERIFY -> ABORTED at the next reset).

otadata.bin is read here with CPython and zlib, independently of firmware/vpartition.py: two
4 KiB sectors, each an esp_ota_select_entry_t (ota_seq, seq_label[20], ota_state, crc), the CRC
being CRC-32 over the 4 bytes of ota_seq continued from 0xFFFFFFFF (ESP-IDF
bootloader_common_ota_select_crc)."""

import hashlib
import json
import re
import struct
import zlib

import pytest

from tests.reliability.rig import Board as FlashTool
from tests.scenario import (  # noqa: F401 (fixtures)
    APP,
    FACTORY_VERSION,
    make_chain,
    make_world,
    staged_firmware,
)
from tools import espimage

STATES = {0: "new", 1: "pending_verify", 2: "valid", 3: "invalid", 4: "aborted"}
PANIC_MARK = b"IAS-VBOARD-PANIC"  # tools/vboard/launch.py: firmware that panics at start


@pytest.fixture
def world(make_world):  # noqa: F811
    chain = make_chain("F")
    w = make_world(trust=[chain.root], serve=chain)
    # Firmware images carry no signature of their own: the device takes them only over
    # verified TLS and with allow_unsigned set (docs/installing.md, policy).
    settings = w.settings()
    settings["allow_unsigned"] = True
    path = w.work / "settings-fw.json"
    path.write_text(json.dumps(settings))
    FlashTool(w.board).flashtool("put", "/settings.json", str(path))
    return w


def publish_firmware(world, version, payload=b""):
    """An app image becomes the server's current artifact for the app; returns its bytes."""
    image = espimage.app_image("v" + version, "micropython", payload=payload + bytes(4000))
    folder = world.work / "artifacts" / APP
    folder.mkdir(parents=True, exist_ok=True)
    name = "%s-%s.bin" % (APP, version)
    (folder / name).write_bytes(image)
    (folder / "current.json").write_text(
        json.dumps({"name": APP, "version": version, "file": name})
    )
    return image


def otadata(world):
    """[(seq, state name, crc ok)] of the two sectors; None for an erased one."""
    raw = (world.board / "otadata.bin").read_bytes()
    assert len(raw) == 0x2000
    out = []
    for i in (0, 1):
        entry = raw[i * 4096 : i * 4096 + 32]
        assert raw[i * 4096 + 32 : (i + 1) * 4096] == b"\xff" * (4096 - 32)
        if entry == b"\xff" * 32:
            out.append(None)
            continue
        seq, state, crc = struct.unpack("<I20xII", entry)
        assert entry[4:24] == b"\xff" * 20  # seq_label stays erased
        out.append((seq, STATES.get(state, "undefined"), crc == zlib.crc32(entry[:4], 0xFFFFFFFF)))
    return out


def bootloader_lines(world, since=0):
    return re.findall(r"\[bootloader\] (.*)", world.console()[since:])


def slot_bytes(world, label, n):
    return (world.board / (label + ".bin")).read_bytes()[:n]


def update_firmware(world, version):
    """Publish an image, power on and run until it is committed. Returns the image."""
    image = publish_firmware(world, version)
    world.boot(3)
    ptr = world.pointer()
    assert ptr.get("version") == version and "trial" not in ptr, world.console()[-3000:]
    return image


def test_firmware_update_boots_on_trial_and_is_committed(world):
    world.boot(1)  # first power-on: blank otadata, the bootloader records ota_0
    assert bootloader_lines(world)[-1] == "booting ota_0 (valid) v1.29.0"
    assert otadata(world) == [(1, "valid", True), None]

    image = publish_firmware(world, "2.0")
    md5 = hashlib.md5(image).hexdigest()
    mark, since = world.mark(), len(world.console())
    world.boot(3)

    lines = bootloader_lines(world, since)
    # boot 1 downloads and set_boot()s; boot 2 is the one trial boot of the new slot
    assert lines[:2] == ["booting ota_0 (valid) v1.29.0", "booting ota_1 (pending_verify) v2.0"]
    assert "was not confirmed" not in world.console()[since:]
    assert slot_bytes(world, "ota_1", len(image)) == image
    calls = world.requests(mark, "/ota/updates")
    assert len(calls) == 2, calls
    headers = dict((k.lower(), v) for k, v in calls[1]["headers"])
    assert headers["x-esp-sketch-md5"] == md5  # the trial reports the new firmware: 304
    ptr = world.pointer()
    assert (ptr["kind"], ptr["version"], ptr["md5"], ptr["size"]) == (
        "firmware",
        "2.0",
        md5,
        len(image),
    )
    assert "trial" not in ptr and "prev" not in ptr
    # set_boot wrote seq 2 (slot (2-1)%2 = ota_1) into sector 1; the verified call home
    # marked it valid in place; sector 0 still holds the old entry
    assert otadata(world) == [(1, "valid", True), (2, "valid", True)]

    since = len(world.console())
    world.boot(1)  # later power-ons stay on the new slot
    assert bootloader_lines(world, since) == ["booting ota_1 (valid) v2.0"]
    assert world.pointer() == ptr


def test_firmware_that_panics_is_rolled_back_by_the_bootloader(world):
    world.boot(1)
    update_firmware(world, "2.0")  # ota_1 runs v2.0, committed
    committed = world.pointer()
    bad = publish_firmware(world, "3.0", payload=PANIC_MARK)
    mark, since = world.mark(), len(world.console())
    world.boot(3)

    console = world.console()[since:]
    lines = bootloader_lines(world, since)
    assert lines[:4] == [
        "booting ota_1 (valid) v2.0",  # downloads v3.0 into ota_0
        "booting ota_0 (pending_verify) v3.0",  # its one trial boot: a panic
        "ota_0 was not confirmed: aborted",
        "booting ota_1 (valid) v2.0",
    ], lines
    assert "Guru Meditation Error" in console
    assert slot_bytes(world, "ota_0", len(bad)) == bad
    # sector 0 got seq 3 (ota_0) NEW, the bootloader made it pending, then aborted
    assert otadata(world) == [(3, "aborted", True), (2, "valid", True)]
    assert world.pointer() == committed
    error = world.header("x-IAS-LAST-ERROR", mark)  # reported from the old slot
    assert error is not None and "ota_0" in error, error
    res = world.callhome()  # the server still offers 3.0: not taken again
    assert res["outcome"] == "no-update" and "refused" in res["reason"], res
    assert otadata(world) == [(3, "aborted", True), (2, "valid", True)]


def test_firmware_that_cannot_call_home_is_rolled_back_by_the_bootloader(world):
    world.boot(1)
    publish_firmware(world, "2.0")
    assert world.callhome()["outcome"] == "updated"  # written, set_boot(), reset
    assert otadata(world) == [(1, "valid", True), (2, "new", True)]
    world.serve(make_chain("Stranger"))  # the trial's call home cannot verify the server
    since = len(world.console())
    world.boot(700)  # virtual seconds: the trial gives up after 10 minutes and resets
    lines = bootloader_lines(world, since)
    assert lines[:3] == [
        "booting ota_1 (pending_verify) v2.0",
        "ota_1 was not confirmed: aborted",
        "booting ota_0 (valid) v1.29.0",
    ], lines
    assert "2.0 not confirmed within 10 minutes" in world.console()[since:]
    assert otadata(world) == [(1, "valid", True), (2, "aborted", True)]
    ptr = world.pointer()
    assert ptr.get("version") == FACTORY_VERSION and "trial" not in ptr, ptr


def test_power_cut_at_every_otadata_write_of_the_trial_and_commit(world):
    # The board's own run: the bootloader's NEW -> PENDING_VERIFY and the commit's mark valid,
    # each an erase and a program of otadata.bin, cut in turn (torn: half of the op lands, or
    # clean: none of it) by tools/vboard/launch.py (DIR/otadata_cut_at, one power-on); the board
    # then powers on again and runs on. Whatever it boots, the pointer agrees with it and
    # nothing stays on trial.
    world.boot(1)
    publish_firmware(world, "2.0")
    assert world.callhome()["outcome"] == "updated"  # ota_1 set to boot (NEW)
    rig = FlashTool(world.board)
    rig.snapshot()
    outcomes = {}
    for mode in ("", " clean"):
        outcomes[mode.strip() or "torn"] = _cut_sweep(world, rig, mode)
    print("board otadata cuts: %r" % outcomes)
    # NEW -> PENDING_VERIFY and mark valid: 2 ops each. Torn, every cut leaves an erased or
    # half-written entry: the old slot. Clean, a cut before the erase of NEW -> PENDING keeps
    # the entry NEW: the next power-on gives the new slot its trial boot and it commits.
    assert outcomes["torn"] == ["old"] * 4, outcomes
    assert outcomes["clean"] == ["new", "old", "old", "old"], outcomes


def _cut_sweep(world, rig, mode):
    outcomes = []
    for n in range(1, 10):
        rig.restore()
        (world.board / "otadata_cut_at").write_text(str(n) + mode)
        since = len(world.console())
        world.boot(3)
        console = world.console()[since:]
        booted = [x for x in bootloader_lines(world, since) if x.startswith("booting")]
        ptr = world.pointer()
        assert "trial" not in ptr, (n, ptr)
        if booted[-1].startswith("booting ota_1"):
            assert ptr["version"] == "2.0" and ptr["kind"] == "firmware", (n, ptr)
            assert otadata(world)[1] == (2, "valid", True), n
            label = "new"
        else:
            assert booted[-1] == "booting ota_0 (valid) v1.29.0", (n, booted)
            assert ptr["version"] == FACTORY_VERSION, (n, ptr)
            assert otadata(world)[0] == (1, "valid", True), n
            label = "old"
        # a cut inside the running firmware may end in main.py's catch-all reset instead
        if "[board] power cut" not in console and "PowerCut()" not in console:
            assert label == "new", n  # no cut: the update went through
            break
        outcomes.append(label)
    return outcomes
