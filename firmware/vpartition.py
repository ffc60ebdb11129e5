# The virtual board's ESP32 OTA partitions: esp32.Partition's interface over host files
# <host>/ota_0.bin, <host>/ota_1.bin and <host>/otadata.json, and the ESP-IDF bootloader's
# choice at each (virtual) hard reset. It models what the client relies on (facts §3.2-3.4):
# writeblocks without offset erases first, programming only clears bits, set_boot() validates
# the image (header, segments, checksum, appended SHA-256, app descriptor) and marks it NEW,
# the next reset makes NEW pending-verify and boots it once, a reset while still pending
# aborts it and boots the previous valid slot, mark_app_valid_cancel_rollback() ends the trial.
# Written independently of fwimage.py's own image checks, so each tests the other.
import hashlib
import json
import os

BLOCK = 4096
SLOT_SIZE = 0x180000  # ESP32_GENERIC OTA variant: two 1.5 MiB app slots
LABELS = ("ota_0", "ota_1")
NEW = "new"
PENDING = "pending_verify"
VALID = "valid"
INVALID = "invalid"
ABORTED = "aborted"
UNDEFINED = "undefined"
ESP_ERR_OTA_VALIDATE_FAILED = -5379
_DESC_MAGIC = 0xABCD5432


def _load(host):
    try:
        with open(host + "/otadata.json") as f:
            d = json.load(f)
        if isinstance(d, dict):
            return d
    except (OSError, ValueError):
        pass
    return {}  # blank otadata, as after flashing a combined firmware.bin


def _save(host, d):
    tmp = host + "/otadata.json.tmp"
    with open(tmp, "w") as f:
        json.dump(d, f)
    os.rename(tmp, host + "/otadata.json")


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class VirtualPartition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1
    _host = "/host"  # for the class-level mark_app_valid_cancel_rollback()

    def __init__(self, host, id=1, block_size=BLOCK):
        VirtualPartition._host = host
        self.host = host
        d = _load(host)
        if id == VirtualPartition.RUNNING:
            label = d.get("boot", LABELS[0])
        elif id == VirtualPartition.BOOT:
            label = _candidates(d)[0] if _candidates(d) else LABELS[0]
        elif id in LABELS:
            label = id
        else:
            raise OSError(2)  # ENOENT, as for an unknown label
        self.label = label
        self.path = host + "/" + label + ".bin"
        self.block_size = block_size
        try:
            self.size = os.stat(self.path)[6]
        except OSError:
            self.size = d.get("slot_size", SLOT_SIZE)

    def __repr__(self):
        return "<VirtualPartition %s>" % self.label

    def info(self):
        i = LABELS.index(self.label)
        return (0, 0x10 + i, 0x10000 + i * self.size, self.size, self.label, False)

    def _open(self):
        if not _exists(self.path):  # a fresh slot is erased flash
            ff = b"\xff" * BLOCK
            with open(self.path, "wb") as f:
                for _ in range(self.size // BLOCK):
                    f.write(ff)
        return open(self.path, "r+b")

    def _span(self, n, off, length):
        at = n * self.block_size + off
        if n < 0 or off < 0 or at + length > self.size:
            raise OSError(22)  # EINVAL: outside the partition
        return at

    def readblocks(self, n, buf, off=0):
        at = self._span(n, off, len(buf))
        with self._open() as f:
            f.seek(at)
            f.readinto(buf)

    def writeblocks(self, n, buf, off=None):
        if off is None:  # erase len(buf) bytes from block n, then write (esp32_partition.c)
            if len(buf) % BLOCK:
                raise OSError(22)
            at = self._span(n, 0, len(buf))
            with self._open() as f:
                f.seek(at)
                f.write(buf)  # erased bytes are 0xFF, so programming them gives buf itself
            return
        at = self._span(n, off, len(buf))
        with self._open() as f:  # no erase: programming can only clear bits
            old = bytearray(len(buf))
            f.seek(at)
            f.readinto(old)
            for i in range(len(buf)):
                old[i] &= buf[i]
            f.seek(at)
            f.write(old)

    def ioctl(self, op, arg):
        if op in (1, 2, 3):
            return 0
        if op == 4:
            return self.size // self.block_size
        if op == 5:
            return self.block_size
        if op == 6:
            if self.block_size != BLOCK:
                return -22
            at = self._span(arg, 0, BLOCK)
            with self._open() as f:
                f.seek(at)
                f.write(b"\xff" * BLOCK)
            return 0
        return -22

    def get_next_update(self):
        other = LABELS[1] if self.label == LABELS[0] else LABELS[0]
        return VirtualPartition(self.host, other)

    def set_boot(self):
        problem = check_image(self.path, self.size)
        if problem:
            raise OSError(ESP_ERR_OTA_VALIDATE_FAILED, "ESP_ERR_OTA_VALIDATE_FAILED: " + problem)
        d = _load(self.host)
        seq = d.setdefault("seq", {})
        states = d.setdefault("states", {})
        top = 0
        for label in LABELS:
            top = max(top, seq.get(label, 0))
        seq[self.label] = top + 1
        states[self.label] = NEW
        _save(self.host, d)

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        d = _load(cls._host)
        running = d.get("boot", LABELS[0])
        states = d.setdefault("states", {})
        if states.get(running) == PENDING:
            states[running] = VALID
            _save(cls._host, d)


def _candidates(d):
    """Slots the bootloader may try, newest first (ESP-IDF: highest ota_seq wins)."""
    seq = d.get("seq", {})
    states = d.get("states", {})
    found = [x for x in LABELS if seq.get(x, 0) or x in states]
    found.sort(key=lambda x: -seq.get(x, 0))
    return found


def check_image(path, limit):
    """None when path holds a valid ESP32 app image, else what is wrong (esp_image_verify)."""
    try:
        f = open(path, "rb")
    except OSError:
        return "no image"
    with f:
        head = f.read(24)
        if len(head) < 24 or head[0] != 0xE9 or not 1 <= head[1] <= 16:
            return "bad image header"
        pos = 24
        checksum = 0xEF
        buf = bytearray(BLOCK)
        for i in range(head[1]):
            seg = f.read(8)
            if len(seg) < 8:
                return "truncated segment header"
            length = int.from_bytes(seg[4:8], "little")
            pos += 8
            if pos + length > limit:
                return "segment %d overruns the partition" % i
            if i == 0:
                desc = f.read(4)
                f.seek(pos)
                if len(desc) < 4 or int.from_bytes(desc, "little") != _DESC_MAGIC:
                    return "no app descriptor"
            left = length
            while left:
                n = f.readinto(memoryview(buf)[: min(left, BLOCK)])
                if not n:
                    return "truncated segment"
                for j in range(n):
                    checksum ^= buf[j]
                left -= n
            pos += length
        pad = (15 - pos % 16) % 16
        f.seek(pos + pad)
        stored = f.read(1)
        if not stored or stored[0] != checksum:
            return "checksum mismatch"
        end = pos + pad + 1
        if head[23] == 1:
            f.seek(0)
            h = hashlib.sha256()
            left = end
            while left:
                n = f.readinto(memoryview(buf)[: min(left, BLOCK)])
                h.update(memoryview(buf)[:n])
                left -= n
            if f.read(32) != h.digest():
                return "SHA-256 mismatch"
    return None


def app_version(path):
    """The version string of the app descriptor in an image file ('' when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0x20)
            desc = f.read(48)
    except OSError:
        return ""
    if len(desc) < 48 or int.from_bytes(desc[:4], "little") != _DESC_MAGIC:
        return ""
    raw = desc[16:48]
    end = raw.find(b"\x00")
    return (raw if end < 0 else raw[:end]).decode()


def bootloader_select(host_dir):
    """What the ESP-IDF bootloader does at every hard reset: pick the newest slot that may
    boot, give a NEW image its one trial (pending verify), abort an image still pending from
    the previous boot, skip images that fail validation. Returns {"slot", "state", "version"}."""
    d = _load(host_dir)
    states = d.setdefault("states", {})
    chosen = None
    for label in _candidates(d):
        st = states.get(label, UNDEFINED)
        if st == PENDING:  # its trial boot ended without mark_app_valid_cancel_rollback()
            states[label] = ABORTED
            print("[bootloader] %s was not confirmed: aborted, rolling back" % label)
            continue
        if st in (ABORTED, INVALID):
            continue
        path = host_dir + "/" + label + ".bin"
        if _exists(path) and check_image(path, os.stat(path)[6]):
            if st == NEW:
                states[label] = INVALID
            continue
        if st == NEW:
            states[label] = PENDING
        chosen = label
        break
    if chosen is None:
        chosen = LABELS[0]  # blank otadata: the bootloader starts ota_0 and records it valid
        states[chosen] = VALID
        d.setdefault("seq", {})[chosen] = max(1, d.get("seq", {}).get(chosen, 0))
    d["boot"] = chosen
    _save(host_dir, d)
    version = app_version(host_dir + "/" + chosen + ".bin")
    print("[bootloader] booting %s (%s) %s" % (chosen, states.get(chosen, UNDEFINED), version))
    return {"slot": chosen, "state": states.get(chosen, UNDEFINED), "version": version}
