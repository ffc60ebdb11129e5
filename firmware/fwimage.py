# ESP32 firmware images into the next OTA partition, block by block, read back and re-hashed
# before set_boot() (micropython-facts §3). Loaded only when a firmware image arrives.
import hashlib

from . import log, trial
from .installer import FLASH_BLOCK, Installer, unsigned_policy
from .reason import ReasonError

_APP_DESC_MAGIC = b"\x32\x54\xcd\xab"  # esp_app_desc_t magic 0xABCD5432, little-endian


def _digest(sha256):
    """The raw SHA-256 from raw bytes or 64 hex digits (callers hand either)."""
    if sha256 is None:
        return None
    if isinstance(sha256, str):
        import binascii

        return binascii.unhexlify(sha256)
    return bytes(sha256)


# -- ESP32 firmware images ----------------------------------------------------------------------
class _ImageScan:
    """Follows the ESP-IDF app image layout while it streams past: header, app descriptor,
    segment headers, the end of the image and its appended SHA-256. Refuses early what is not a
    single app image (a combined firmware.bin holds a bootloader image, padding, a partition
    table and then the app)."""

    def __init__(self, size):
        self.size = size
        self.head = bytearray(0x24)  # image header, first segment header, descriptor magic
        self.seg = bytearray(8)
        self.next_hdr = None  # absolute offset of the next segment header
        self.segs_left = 0
        self.end = None
        self.hashed = False
        self.h = hashlib.sha256()
        self.tail = bytearray(32)

    @staticmethod
    def _copy(dst, dst_off, view, base):
        """Copy the part of view (at absolute offset base) that falls in dst[dst_off:]."""
        lo = max(dst_off, base)
        hi = min(dst_off + len(dst), base + len(view))
        if lo < hi:
            dst[lo - dst_off : hi - dst_off] = view[lo - base : hi - base]
        return hi >= dst_off + len(dst)

    def feed(self, view, base):
        stop = base + len(view)
        if self.next_hdr is None:
            if self._copy(self.head, 0, view, base):
                self._parse_head()
        while self.next_hdr is not None and self.segs_left and self.next_hdr < stop:
            if not self._copy(self.seg, self.next_hdr, view, base):
                break
            length = int.from_bytes(self.seg[4:8], "little")
            self.next_hdr += 8 + length
            self.segs_left -= 1
            if self.next_hdr > self.size:
                raise ReasonError("not_app_image", "segment runs past the end of the image")
            if not self.segs_left:
                self._set_end(self.next_hdr)
        for at in (0x7000, 0x8000):
            if base <= at < stop - 1 and view[at - base] == 0xAA and view[at - base + 1] == 0x50:
                if self.end is None or self.end <= at:
                    raise ReasonError("combined_image", _COMBINED)
        hash_end = stop if self.end is None or not self.hashed else min(stop, self.end - 32)
        if hash_end > base:
            self.h.update(view[: hash_end - base])
        if self.end is not None and self.hashed:
            self._copy(self.tail, self.end - 32, view, base)

    def _parse_head(self):
        h = self.head
        if h[0] != 0xE9 or not 1 <= h[1] <= 16:
            raise ReasonError("not_app_image", "no ESP image header")
        if h[0x20:0x24] != _APP_DESC_MAGIC:
            raise ReasonError("not_app_image", "no app descriptor at 0x20. " + _COMBINED)
        self.hashed = h[23] == 1
        self.segs_left = h[1]
        self.next_hdr = 24

    def _set_end(self, p):
        end = p + (15 - p % 16) % 16 + 1  # the checksum byte ends a 16-byte line
        if self.hashed:
            end += 32
        self.end = end
        if end < self.size:
            raise ReasonError(
                "combined_image",
                "the app image ends at %d of %d bytes. %s" % (end, self.size, _COMBINED),
            )
        if end > self.size:
            raise ReasonError("not_app_image", "image of %d bytes, %d sent" % (end, self.size))

    def done(self):
        if self.end is None:
            raise ReasonError("not_app_image", "truncated image")
        if self.hashed and self.h.digest() != bytes(self.tail):
            raise ReasonError("not_app_image", "appended SHA-256 does not match the image")


_COMBINED = (
    "A combined firmware.bin (bootloader + partition table) is refused: send micropython.bin"
)


class FirmwareInstaller(Installer):
    """Writes an ESP32 app image block by block into the next OTA partition, reads it back and
    re-hashes it; activate() records the trial and calls set_boot()."""

    kind = "firmware"

    def begin(self, size, name, version):
        b = self.board
        if not b.has_firmware_ota:
            raise ReasonError("no_firmware_ota", "this board takes app bundles only")
        unsigned_policy(b, self.settings, self.verified, "a firmware image (unsigned)")
        self.start(size, name, version)
        part = b.running_partition()
        if part is None:
            raise ReasonError("no_firmware_ota", "no OTA partition table")
        self.running = part
        self.target = part.get_next_update()
        room = self.target.ioctl(4, 0) * self.target.ioctl(5, 0)
        if size > room:
            raise ReasonError("too_large", "%d bytes for a %d-byte partition" % (size, room))
        self.buf = bytearray(FLASH_BLOCK)
        self.fill = 0
        self.block = 0
        self.sha = hashlib.sha256()
        self.scan = _ImageScan(size)

    def write(self, chunk):
        if self.got + len(chunk) > self.size:
            raise ReasonError("too_large", "more than the announced %d bytes" % self.size)
        view = memoryview(chunk)
        pos = 0
        while pos < len(view):
            n = min(len(view) - pos, FLASH_BLOCK - self.fill)
            self.buf[self.fill : self.fill + n] = view[pos : pos + n]
            self.fill += n
            pos += n
            if self.fill == FLASH_BLOCK:
                self._flush()
        self.got += len(chunk)

    def _flush(self):
        view = memoryview(self.buf)
        self.scan.feed(view[: self.fill], self.block * FLASH_BLOCK)
        self.sha.update(view[: self.fill])
        for i in range(self.fill, FLASH_BLOCK):  # erased flash reads 0xFF
            self.buf[i] = 0xFF
        self.target.writeblocks(self.block, self.buf)  # erases the block, then programs it
        self.block += 1
        self.fill = 0
        self.board.feed_watchdog()

    def finish(self, md5_hex, sha256=None):
        if self.fill:
            self._flush()
        if self.got != self.size:
            raise ReasonError("not_app_image", "%d of %d bytes" % (self.got, self.size))
        self.scan.done()
        digest = self.sha.digest()
        if sha256 is not None and _digest(sha256) != digest:
            raise ReasonError("hash_mismatch", "image SHA-256")
        h = hashlib.sha256()  # read back what the flash holds now
        left = self.size
        for i in range(self.block):
            self.target.readblocks(i, self.buf)
            n = min(left, FLASH_BLOCK)
            h.update(memoryview(self.buf)[:n])
            left -= n
        if h.digest() != digest:
            raise ReasonError("verify_failed", "the partition reads back differently")
        self.md5 = md5_hex
        self.ready = True

    def abort(self):
        self.ready = False  # nothing to undo: the partition is not bootable without set_boot()

    def activate(self):
        if not self.ready:
            raise ReasonError("not_app_image", "activate() before a successful finish()")
        s = self.slots
        old = s.read()
        art = trial.artifact("firmware", self.name, self.version, 0, self.md5, self.size)
        target = self.target.info()[4]
        record = {"kind": "firmware", "target": target, "from": self.running.info()[4]}
        trial.begin(s, self.board, old["active"], art, record)
        try:
            self.target.set_boot()
        except OSError as e:
            s.write(old)
            raise ReasonError("set_boot_failed", repr(e))
        log.info("ota", "firmware %s set to boot from %s" % (self.version, target))
