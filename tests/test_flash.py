"""`ias flash`: image checks, and the esptool calls (esptool mocked at its public API)."""

import struct

import pytest
from ptydevice import PtyDevice, list_image

from tools import cli, flash
from tools.espimage import app_image

BANNER = b"MicroPython v1.29.0 on 2026-06-01; Generic ESP32 module with ESP32"


def bootloader():
    # An ESP32 2nd-stage bootloader header; its first segment starts with esp_bootloader_desc_t
    # (magic byte 0x50), not with the application descriptor.
    header = struct.pack("<BBBBI", 0xE9, 1, 2, 0x20, 0x40080000) + b"\xee" + b"\x00" * 15
    desc = b"\x50\x00\x00\x00" + struct.pack("<I", 1) + b"v5.5.2".ljust(32, b"\0")
    return header + struct.pack("<II", 0x3FFF0000, len(desc)) + desc


def table(*entries):
    out = b""
    for ptype, sub, off, size, label in entries:
        out += b"\xaa\x50" + struct.pack("<BBII16sI", ptype, sub, off, size, label, 0)
    return out + b"\xff" * 32


OTA_TABLE = table(
    (1, 2, 0x9000, 0x4000, b"nvs"),
    (1, 0, 0xD000, 0x2000, b"otadata"),
    (0, 0x10, 0x10000, 0x180000, b"ota_0"),
    (0, 0x11, 0x190000, 0x180000, b"ota_1"),
)
FACTORY_TABLE = table((1, 2, 0x9000, 0x6000, b"nvs"), (0, 0, 0x10000, 0x1F0000, b"factory"))


def esp32_firmware(part=OTA_TABLE, app=None):
    """A firmware.bin laid out as MicroPython's ESP32 builds are (offsets from 0x1000)."""
    out = bytearray(b"\xff" * (0x10000 - 0x1000))
    boot = bootloader()
    out[: len(boot)] = boot
    out[0x7000 : 0x7000 + len(part)] = part
    return bytes(out) + (app if app is not None else app_image("", "", payload=BANNER))


def esp8266_firmware(payload=b"MicroPython v1.29.0 on 2026-06-01; ESP module with ESP8266"):
    head = struct.pack("<BBBBI", 0xE9, 3, 0, 0x40, 0x40100004)
    return head + b"\x00" * 0x8000 + payload + b"\xff" * 0x1000


def test_esp32_ota_image_accepted():
    info = flash.check_image(esp32_firmware(), "esp32")
    assert info["ota"] is True and info["offset"] == 0x1000
    assert [p[4] for p in info["partitions"]] == ["nvs", "otadata", "ota_0", "ota_1"]


def test_esp32_without_ota_slots_is_flagged():
    info = flash.check_image(esp32_firmware(FACTORY_TABLE), "esp32")
    assert info["ota"] is False


@pytest.mark.parametrize(
    "data, words",
    [
        (b"\x00" * 8192, "first byte 0x00"),
        (app_image("", "", payload=BANNER) + b"\xff" * 8192, "application image"),
        (esp32_firmware(part=b"\xff" * 32), "no partition table"),
        (esp32_firmware(app=b"\xff" * 4096), "no ESP32 application"),
        (esp32_firmware(app=app_image("", "", payload=b"an ESP-IDF app")), "not MicroPython"),
        (esp8266_firmware(), "no partition table"),
    ],
)
def test_esp32_rejects(data, words):
    with pytest.raises(flash.FlashError) as e:
        flash.check_image(data, "esp32")
    assert words in str(e.value)


def test_esp32_image_for_another_chip_rejected():
    app = bytearray(app_image("", "", payload=BANNER))
    app[12:14] = struct.pack("<H", 9)  # ESP32-S3
    with pytest.raises(flash.FlashError, match="another ESP32 family chip"):
        flash.check_image(esp32_firmware(app=bytes(app)), "esp32")


def test_esp8266_checks():
    assert flash.check_image(esp8266_firmware(), "esp8266")["offset"] == 0
    with pytest.raises(flash.FlashError, match="ESP32 image"):
        flash.check_image(esp32_firmware(), "esp8266")
    with pytest.raises(flash.FlashError, match="not MicroPython"):
        flash.check_image(esp8266_firmware(b"NodeMCU"), "esp8266")


class FakeEsp:
    def __init__(self, name, log):
        self.CHIP_NAME = name
        self.log = log

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.log.append(("close",))

    def change_baud(self, baud):
        self.log.append(("change_baud", baud))


@pytest.fixture
def esptool(monkeypatch):
    """Replace esptool's public API with recorders; `esptool.chip` is what the board says."""
    from esptool import cmds

    class Rec:
        chip = "ESP32"
        log = []

    def detect_chip(port, baud=115200, **kw):
        Rec.log.append(("detect_chip", port, baud))
        return FakeEsp(Rec.chip, Rec.log)

    def record(name, ret=None):
        def fn(*args, **kw):
            Rec.log.append((name, args[1:], kw))
            return args[0] if ret == "esp" else ret

        return fn

    monkeypatch.setattr(cmds, "detect_chip", detect_chip)
    monkeypatch.setattr(cmds, "run_stub", record("run_stub", "esp"))
    monkeypatch.setattr(cmds, "attach_flash", record("attach_flash"))
    monkeypatch.setattr(cmds, "erase_flash", record("erase_flash"))
    monkeypatch.setattr(cmds, "write_flash", record("write_flash"))
    monkeypatch.setattr(cmds, "reset_chip", record("reset_chip"))
    monkeypatch.setattr(cmds, "detect_flash_size", lambda esp: "4MB")
    return Rec


@pytest.fixture
def port(tmp_path):
    p = tmp_path / "ttyUSB0"  # esptool is mocked; only its existence matters
    p.write_bytes(b"")
    return str(p)


def names(log):
    return [e[0] for e in log]


def test_flash_esp32_writes_at_0x1000_after_erase(esptool, port, tmp_path):
    fw = tmp_path / "ESP32_GENERIC-OTA.bin"
    data = esp32_firmware()
    fw.write_bytes(data)
    flash.flash(port, str(fw), chip="esp32", baud=921600, deploy=False)
    assert names(esptool.log) == [
        "detect_chip",
        "run_stub",
        "change_baud",
        "attach_flash",
        "erase_flash",
        "write_flash",
        "reset_chip",
        "close",
    ]
    assert esptool.log[0] == ("detect_chip", port, 115200)  # connect at the ROM's rate
    assert esptool.log[2] == ("change_baud", 921600)
    write = esptool.log[5]
    assert write[1] == ([(0x1000, data)],)
    assert write[2] == {"flash_size": "keep"}
    assert esptool.log[6][1] == ("hard-reset",)


def test_flash_esp8266_writes_at_0_with_detected_size(esptool, port, tmp_path):
    esptool.chip = "ESP8266"
    fw = tmp_path / "ESP8266_GENERIC.bin"
    data = esp8266_firmware()
    fw.write_bytes(data)
    flash.flash(port, str(fw), chip="esp8266", baud=115200, deploy=False)
    assert "change_baud" not in names(esptool.log)  # already at 115200
    write = [e for e in esptool.log if e[0] == "write_flash"][0]
    assert write[1] == ([(0x0, data)],) and write[2] == {"flash_size": "4MB"}


def test_wrong_chip_touches_nothing(esptool, port, tmp_path, capsys):
    esptool.chip = "ESP8266"
    fw = tmp_path / "fw.bin"
    fw.write_bytes(esp32_firmware())
    rc = cli.main(["flash", "--port", port, "--firmware", str(fw), "--no-deploy"])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err == (
        "ias flash: error: the board on %s is an ESP8266, not an ESP32 (use --chip esp8266)" % port
    )
    assert "erase_flash" not in names(esptool.log) and "write_flash" not in names(esptool.log)


def test_missing_port_and_bad_file_are_one_line(esptool, tmp_path, capsys, port):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(esp32_firmware())
    rc = cli.main(["flash", "--port", "/dev/ttyNOPE9", "--firmware", str(fw)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "no such serial port: /dev/ttyNOPE9" in err
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"hello" * 2000)
    rc = cli.main(["flash", "--port", port, "--firmware", str(junk)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "expected 0xE9" in err
    assert esptool.log == []  # no board was contacted for either


def test_esptool_failure_is_one_line(esptool, port, tmp_path, monkeypatch, capsys):
    from esptool import cmds
    from esptool.util import FatalError

    def fail(*a, **k):
        raise FatalError("Failed to connect to ESP32: No serial data received.\nFor details...")

    monkeypatch.setattr(cmds, "detect_chip", fail)
    fw = tmp_path / "fw.bin"
    fw.write_bytes(esp32_firmware())
    assert cli.main(["flash", "--port", port, "--firmware", str(fw)]) == 1
    err = capsys.readouterr().err
    want = "ias flash: error: esptool: Failed to connect to ESP32: No serial data received.\n"
    assert err == want


def test_flash_then_deploy_to_a_board(esptool, tmp_path):
    # esptool mocked; the deploy that follows is real, to the pty board.
    fw = tmp_path / "fw.bin"
    fw.write_bytes(esp32_firmware())
    image = tmp_path / "flash.img"
    with PtyDevice(image) as dev:
        rc = cli.main(["flash", "--port", dev.port, "--firmware", str(fw)])
    assert rc == 0
    assert "write_flash" in names(esptool.log)
    files = list_image(image)
    assert "/boot.py" in files and "/lib/ias/board.mpy" in files
    assert "/lib/ias/board_unix.mpy" not in files  # compiled for the esp32 target
