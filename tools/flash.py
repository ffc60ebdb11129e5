"""`ias flash`: erase a board and write MicroPython with esptool, then deploy the client.

Uses esptool's public Python API (esptool >= 5: `esptool.cmds.detect_chip`, `run_stub`,
`attach_flash`, `erase_flash`, `write_flash`, `reset_chip`). Before touching the board it checks
the file is a MicroPython image for the chosen chip (see `check_image`), and after connecting,
that the chip on the port is the one asked for.
"""

import argparse
import os
import struct
import sys

# Where the downloadable MicroPython .bin goes (micropython.org board pages, "deploy_options"
# flash_offset; esptool docs): ESP32's combined image starts with the 2nd-stage bootloader at
# 0x1000; ESP8266's at 0x0.
OFFSETS = {"esp32": 0x1000, "esp8266": 0x0}
CHIPS = tuple(OFFSETS)
ROM_BAUD = 115200

IMAGE_MAGIC = 0xE9  # first byte of every ESP image header (bootloader and app)
APP_DESC_MAGIC = b"\x32\x54\xcd\xab"  # esp_app_desc_t.magic_word 0xABCD5432, LE, at app + 0x20
PART_MAGIC = b"\xaa\x50"  # a partition table entry
MARKER = b"MicroPython"  # in MicroPython's banner string, stored in the app's rodata
# Offsets inside ESP32_GENERIC's firmware.bin, which is flashed at 0x1000.
ESP32_TABLE = 0x8000 - 0x1000
ESP32_APP = 0x10000 - 0x1000
ESP32_CHIP_ID = 0  # image extended header chip id: 0 = ESP32 (2 = S2, 5 = C3, 9 = S3, ...)


class FlashError(Exception):
    pass


def partitions(data, at=ESP32_TABLE):
    """[(type, subtype, offset, size, label)] of the partition table at `at`, [] if none."""
    out = []
    for pos in range(at, min(at + 0xC00, len(data) - 31), 32):
        entry = data[pos : pos + 32]
        if entry[:2] != PART_MAGIC:
            break
        ptype, sub, off, size = struct.unpack_from("<BBII", entry, 2)
        label = entry[12:28].split(b"\x00")[0].decode("ascii", "replace")
        out.append((ptype, sub, off, size, label))
    return out


def check_image(data, chip):
    """Check `data` (a whole .bin) is MicroPython for `chip`; returns a dict of what was found.

    ESP32: byte 0 is 0xE9 (the bootloader), it is not an app-only image (no app descriptor at
    0x20: that is micropython.bin, for OTA slots, which must not go to 0x1000), a partition
    table sits at file offset 0x7000 (flash 0x8000), the app at 0xF000 (flash 0x10000) starts
    with 0xE9 and carries the esp_app_desc magic 0xABCD5432 at +0x20 and chip id 0 (ESP32),
    and the app contains the "MicroPython" banner. `ota` tells whether the table has two app
    slots (ESP32_GENERIC-OTA). ESP8266: byte 0 is 0xE9, no ESP32 partition table, and the
    "MicroPython" banner is present."""
    if chip not in OFFSETS:
        raise FlashError("unknown chip %r (one of %s)" % (chip, ", ".join(CHIPS)))
    if len(data) < 4096 or data[0] != IMAGE_MAGIC:
        raise FlashError(
            "not an ESP firmware image (first byte 0x%02X, expected 0xE9)" % (data[:1] or b"\0")[0]
        )
    table = partitions(data)
    if chip == "esp8266":
        if table:
            raise FlashError("this is an ESP32 image (it has a partition table), not ESP8266")
        if MARKER not in data:
            raise FlashError("an ESP8266 image, but not MicroPython (no MicroPython banner)")
        return {"chip": chip, "offset": OFFSETS[chip], "ota": False, "size": len(data)}
    if data[0x20:0x24] == APP_DESC_MAGIC:
        raise FlashError(
            "this is an application image (micropython.bin, for OTA slots); "
            "flash the full firmware .bin that starts with the bootloader"
        )
    if not table:
        raise FlashError("no partition table at 0x8000: not an ESP32 MicroPython firmware.bin")
    app = data[ESP32_APP:]
    if len(app) < 0x30 or app[0] != IMAGE_MAGIC or app[0x20:0x24] != APP_DESC_MAGIC:
        raise FlashError("no ESP32 application at 0x10000 (no 0xE9 header and app descriptor)")
    chip_id = struct.unpack_from("<H", app, 12)[0]
    if chip_id != ESP32_CHIP_ID:
        raise FlashError(
            "the image is built for another ESP32 family chip (image chip id %d)" % chip_id
        )
    if MARKER not in app:
        raise FlashError("an ESP32 application, but not MicroPython (no MicroPython banner)")
    slots = [p for p in table if p[0] == 0 and 0x10 <= p[1] <= 0x1F]
    has_otadata = any(p[0] == 1 and p[1] == 0 for p in table)
    return {
        "chip": chip,
        "offset": OFFSETS[chip],
        "ota": len(slots) >= 2 and has_otadata,
        "size": len(data),
        "partitions": table,
    }


def _esp_chip_name(esp):
    return getattr(esp, "CHIP_NAME", "?")


def write_firmware(port, chip, data, baud=460800, stream=None):
    """Erase the whole flash of the board on `port` and write `data` at the chip's offset."""
    from esptool import cmds

    out = stream if stream is not None else sys.stderr
    offset = OFFSETS[chip]
    try:
        with cmds.detect_chip(port, ROM_BAUD) as esp:
            found = _esp_chip_name(esp)
            if found.lower() != chip:
                raise FlashError(
                    "the board on %s is an %s, not an %s (use --chip %s)"
                    % (port, found, chip.upper(), found.lower())
                )
            esp = cmds.run_stub(esp)
            if baud and baud != ROM_BAUD:
                esp.change_baud(baud)
            cmds.attach_flash(esp)
            print("erasing the whole flash of the %s on %s" % (found, port), file=out)
            cmds.erase_flash(esp)
            size = "keep"
            if chip == "esp8266":
                # MicroPython's ESP8266 docs make the flash size mandatory ("detect"): the
                # header of its image must match the module's flash.
                detect = getattr(cmds, "detect_flash_size", None)
                size = (detect(esp) if detect else None) or "keep"
            print("writing %d bytes at 0x%x" % (len(data), offset), file=out)
            cmds.write_flash(esp, [(offset, data)], flash_size=size)
            cmds.reset_chip(esp, "hard-reset")
    except FlashError:
        raise
    except Exception as e:  # esptool's FatalError, serial errors: one line for the user
        text = str(e).strip().splitlines()
        raise FlashError("esptool: %s" % (text[0] if text else type(e).__name__))


def flash(port, firmware, chip="esp32", baud=460800, deploy=True, deploy_args=None, stream=None):
    """Check the image, flash it, then (unless `deploy` is false) run `ias deploy`."""
    out = stream if stream is not None else sys.stderr
    if not port.startswith(("rfc2217://", "socket://")) and not os.path.exists(port):
        raise FlashError("no such serial port: %s (is the board plugged in?)" % port)
    try:
        with open(firmware, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FlashError("cannot read firmware %s: %s" % (firmware, e.strerror or e))
    info = check_image(data, chip)
    if chip == "esp32" and not info["ota"]:
        print(
            "warning: %s has no second app slot (not the ESP32_GENERIC OTA variant): "
            "app updates work, firmware updates over the air will not" % firmware,
            file=out,
        )
    write_firmware(port, chip, data, baud, out)
    if deploy:
        from tools.deploy import deploy_to

        deploy_to(port, target=chip, stream=out, **(deploy_args or {}))
    return info


DESCRIPTION = """\
Erase a board and write MicroPython to it with esptool, then deploy this client (`ias deploy`).
ESP32: use the OTA variant of the ESP32_GENERIC build (two app slots, needed for firmware
updates); the file is written at 0x1000. ESP8266: ESP8266_GENERIC, written at 0x0. The file is
checked first (ESP image magic 0xE9, the MicroPython banner, for ESP32 the partition table and
app descriptor) and so is the chip on the port. Everything on the board is erased."""

EPILOG = """\
examples:
  ias flash --port /dev/ttyUSB0 --firmware ESP32_GENERIC-OTA-v1.29.0.bin
  ias flash --port /dev/ttyUSB0 --chip esp8266 --firmware ESP8266_GENERIC-v1.29.0.bin
  ias flash --port COM4 --firmware fw.bin --baud 115200 --no-deploy"""


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0 or COM4")
    parser.add_argument("--chip", choices=CHIPS, default="esp32", help="(default: esp32)")
    parser.add_argument(
        "--firmware", required=True, metavar="FILE", help="MicroPython .bin for the board"
    )
    parser.add_argument(
        "--baud",
        type=int,
        default=460800,
        help="baud rate for writing (default 460800; try 115200 if it fails)",
    )
    parser.add_argument(
        "--no-deploy", action="store_true", help="only write MicroPython, do not deploy"
    )
    parser.add_argument("--settings", metavar="FILE", help="passed on to `ias deploy`")
    parser.add_argument("--update-key", metavar="PUB", help="passed on to `ias deploy`")


def add_parser(subparsers, summary):
    parser = subparsers.add_parser(
        "flash",
        help=summary,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args):
    from tools.deploy import BuildError
    from tools.repl import DeployError

    extra = {"settings": args.settings, "update_key": args.update_key}
    try:
        flash(
            args.port,
            args.firmware,
            chip=args.chip,
            baud=args.baud,
            deploy=not args.no_deploy,
            deploy_args=extra,
        )
    except (FlashError, BuildError, DeployError) as e:
        print("ias flash: error: %s" % e, file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python tools/flash.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    if __package__ in (None, ""):  # run as `python tools/flash.py`
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
