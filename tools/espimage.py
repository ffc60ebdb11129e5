"""ESP32 application images in the ESP-IDF layout, for virtual boards and tests.

Layout: a 24-byte image header (magic 0xE9), segments each with an 8-byte header, the first
segment starting with `esp_app_desc_t` (magic 0xABCD5432 at image offset 0x20), a checksum byte
padded to 16, then the SHA-256 of everything before it (hash_appended). `combined_image` adds a
bootloader and a partition table in front, as MicroPython's `firmware.bin` has them.
"""

import hashlib
import struct

APP_DESC_MAGIC = 0xABCD5432


def app_desc(version, project, secure_version=0):
    return (
        struct.pack(
            "<II8s32s32s16s16s32s32s",
            APP_DESC_MAGIC,
            secure_version,
            b"",
            version.encode()[:31],
            project.encode()[:31],
            b"00:00:00",
            b"Jan  1 2026",
            b"v5.5.2",
            hashlib.sha256(project.encode() + version.encode()).digest(),
        )
        + b"\x00" * 80
    )  # the reserved tail of esp_app_desc_t (256 bytes in all)


def app_image(version="v1.0", project="micropython", payload=b"", secure_version=0):
    seg0 = app_desc(version, project, secure_version) + payload
    seg0 += b"\x00" * (-len(seg0) % 4)
    header = struct.pack(
        "<BBBBIBBBBBHB7sB",
        0xE9,
        1,
        2,
        0x20,
        0x40080000,  # magic, segments, SPI mode, size/freq, entry point
        0xEE,
        0,
        0,
        0,
        0,  # wp pin, drive strengths, chip id 0 = ESP32
        0,
        0,  # min chip revision (two fields)
        b"\x00" * 7,
        1,  # hash appended
    )[:24]
    body = header + struct.pack("<II", 0x3F400020, len(seg0)) + seg0
    checksum = 0xEF
    for b in seg0:
        checksum ^= b
    pad = (15 - len(body) % 16) % 16
    body += b"\x00" * pad + bytes([checksum])
    return body + hashlib.sha256(body).digest()


def combined_image(app):
    """bootloader at 0x1000, partition table at 0x8000, app at 0x10000, offsets from 0x1000."""
    boot = app_image("bootloader", "bootloader")
    table = b"\xaa\x50" + b"\x00" * 30
    out = bytearray(b"\xff" * (0x10000 - 0x1000))
    out[0 : len(boot)] = boot
    out[0x8000 - 0x1000 : 0x8000 - 0x1000 + len(table)] = table
    return bytes(out) + app
