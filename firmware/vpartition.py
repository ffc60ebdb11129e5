# The virtual board's ESP32 OTA partitions: esp32.Partition's interface over host files
# <host>/ota_0.bin, <host>/ota_1.bin and <host>/otadata.bin, and the ESP-IDF bootloader's choice
# at each (virtual) hard reset. It models what the client relies on (facts §3.2-3.4):
# writeblocks without offset erases first, programming only clears bits, set_boot() validates
# the image (header, segments, checksum, appended SHA-256, app descriptor) and marks it NEW,
# the next reset makes NEW pending-verify and boots it once, a reset while still pending
# aborts it and boots the previous valid slot, mark_app_valid_cancel_rollback() ends the trial.
# otadata.bin is kept as ESP-IDF keeps the otadata partition: two 4 KiB sectors, each holding
# one esp_ota_select_entry_t, rewritten in place (erase the sector, program 32 bytes), never
# renamed (facts §8.8: a rename on the host mount does nothing).
# Written independently of fwimage.py's own image checks, so each tests the other.
import binascii
import hashlib
import os

BLOCK = 4096
SECTOR = 4096  # one otadata entry per flash sector
ENTRY = 32  # sizeof(esp_ota_select_entry_t)
SLOT_SIZE = 0x180000  # ESP32_GENERIC OTA variant: two 1.5 MiB app slots
LABELS = ("ota_0", "ota_1")
BLANK_SEQ = 0xFFFFFFFF
# esp_ota_img_states_t (esp_flash_partitions.h)
NEW = 0
PENDING = 1
VALID = 2
INVALID = 3
ABORTED = 4
UNDEFINED = 0xFFFFFFFF
_NAMES = {NEW: "new", PENDING: "pending_verify", VALID: "valid", INVALID: "invalid"}
_NAMES[ABORTED] = "aborted"
ESP_ERR_OTA_VALIDATE_FAILED = -5379
_DESC_MAGIC = 0xABCD5432


def state_name(code):
    return _NAMES.get(code, "undefined")


def seq_crc(seq):
    # ESP-IDF bootloader_common_loader.c, bootloader_common_ota_select_crc():
    #   esp_rom_crc32_le(UINT32_MAX, (uint8_t *)&s->ota_seq, 4)
    # The CRC covers the 4 little-endian bytes of ota_seq only (not label or state). The ROM's
    # crc32_le inverts on entry and exit, so this is zlib's CRC-32 continued from 0xFFFFFFFF:
    # seq 1 gives 0x4743989A.
    return binascii.crc32(seq.to_bytes(4, "little"), 0xFFFFFFFF) & 0xFFFFFFFF


def entry_bytes(seq, state):
    """An esp_ota_select_entry_t: ota_seq, seq_label[20] (left erased), ota_state, crc."""
    return (
        seq.to_bytes(4, "little")
        + b"\xff" * 20
        + state.to_bytes(4, "little")
        + seq_crc(seq).to_bytes(4, "little")
    )


class Entry:
    def __init__(self, raw):
        self.seq = int.from_bytes(raw[0:4], "little")
        self.state = int.from_bytes(raw[24:28], "little")
        self.crc_ok = int.from_bytes(raw[28:32], "little") == seq_crc(self.seq)

    def invalid(self):
        # bootloader_common_ota_select_invalid()
        return self.seq == BLANK_SEQ or self.state in (INVALID, ABORTED)

    def valid(self):
        # bootloader_common_ota_select_valid()
        return not self.invalid() and self.crc_ok

    def blank_or_bad(self):
        # what the bootloader calls initial contents (all 0xFF) or a wrong CRC
        return self.seq == BLANK_SEQ or not self.crc_ok

    def slot(self):
        return (self.seq - 1) % len(LABELS)  # the bootloader's mapping of ota_seq to a slot


class OtaDataFile:
    """otadata.bin as flash: two sectors, erase fills one with 0xFF, programming only clears
    bits, every write in place. The block-device interface of tools/vboard/nor.py's NorFlash,
    so a test can put one of those (which counts and cuts operations) in its place."""

    def __init__(self, path):
        self.path = path

    def _file(self):
        try:
            return open(self.path, "r+b")
        except OSError:  # a fresh board: the partition reads erased
            with open(self.path, "wb") as f:
                f.write(b"\xff" * (2 * SECTOR))
            return open(self.path, "r+b")

    def readblocks(self, n, buf, off=0):
        got = 0
        try:
            with open(self.path, "rb") as f:  # reading never creates the file
                f.seek(n * SECTOR + off)
                got = f.readinto(buf) or 0
        except OSError:
            pass
        for i in range(got, len(buf)):
            buf[i] = 0xFF

    def writeblocks(self, n, buf, off=0):
        old = bytearray(len(buf))
        self.readblocks(n, old, off)
        for i in range(len(buf)):
            old[i] &= buf[i]
        with self._file() as f:
            f.seek(n * SECTOR + off)
            f.write(old)

    def ioctl(self, op, arg):
        if op == 4:
            return 2
        if op == 5:
            return SECTOR
        if op == 6:
            with self._file() as f:
                f.seek(arg * SECTOR)
                f.write(b"\xff" * SECTOR)
        return 0


_devices = {}  # host dir -> a block device standing in for otadata.bin (tests: cut models)


def use_otadata_device(host, dev):
    """Route this board's otadata through `dev` (None: back to <host>/otadata.bin)."""
    if dev is None:
        _devices.pop(host, None)
    else:
        _devices[host] = dev


def _device(host):
    dev = _devices.get(host)
    return dev if dev is not None else OtaDataFile(host + "/otadata.bin")


def read_entries(host, dev=None):
    dev = _device(host) if dev is None else dev
    out = []
    raw = bytearray(ENTRY)
    for i in (0, 1):
        dev.readblocks(i, raw, 0)
        out.append(Entry(raw))
    return out


def _write_entry(dev, i, seq, state):
    # esp_ota_ops.c rewrite_ota_seq() and the bootloader's write_otadata(): erase the entry's
    # sector, then program the 32 bytes. Two flash operations; a cut between them leaves the
    # sector erased (an invalid entry), a torn program leaves a wrong CRC.
    dev.ioctl(6, i)
    dev.writeblocks(i, entry_bytes(seq, state), 0)


def active_index(entries):
    """bootloader_common_get_active_otadata(): the valid entry with the highest ota_seq, or -1."""
    a, b = entries[0].valid(), entries[1].valid()
    if a and b:
        return 0 if entries[0].seq >= entries[1].seq else 1
    return 0 if a else (1 if b else -1)


def slot_states(host):
    """{label: state name} for the slots the two entries name (newest entry per slot), for
    tests and the console; entries with a wrong CRC or a blank seq are left out."""
    out = {}
    best = {}
    for e in read_entries(host):
        if e.seq == BLANK_SEQ or not e.crc_ok:
            continue
        label = LABELS[e.slot()]
        if e.seq >= best.get(label, 0):
            best[label] = e.seq
            out[label] = state_name(e.state)
    return out


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _booted(host):
    """The slot the bootloader started at the last hard reset (the running code's address on a
    chip; a host file here, as `ias sim callhome` runs without a bootloader pass)."""
    try:
        with open(host + "/booted") as f:
            label = f.read().strip()
        if label in LABELS:
            return label
    except OSError:
        pass
    return _boot_label(host)


def _boot_label(host):
    """esp_ota_get_boot_partition(): the slot otadata names, ota_0 when it names none."""
    entries = read_entries(host)
    i = active_index(entries)
    return LABELS[entries[i].slot()] if i >= 0 else LABELS[0]


class VirtualPartition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1
    _host = "/host"  # for the class-level mark_app_valid_cancel_rollback()

    def __init__(self, host, id=1, block_size=BLOCK):
        VirtualPartition._host = host
        self.host = host
        if id == VirtualPartition.RUNNING:
            label = _booted(host)
        elif id == VirtualPartition.BOOT:
            label = _boot_label(host)
        elif id in LABELS:
            label = id
        else:
            raise OSError(2)  # ENOENT, as for an unknown label
        self.label = label
        self.path = host + "/" + label + ".bin"
        self.block_size = block_size
        self.size = SLOT_SIZE
        for p in (self.path, host + "/" + LABELS[1 - LABELS.index(label)] + ".bin"):
            if _exists(p):  # both slots have the size of whichever exists
                self.size = os.stat(p)[6]
                break

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
        """esp_ota_set_boot_partition(): validate the image, then write a NEW entry with the
        lowest ota_seq above the active one that maps to this slot, into the other sector."""
        problem = check_image(self.path, self.size)
        if problem:
            raise OSError(ESP_ERR_OTA_VALIDATE_FAILED, "ESP_ERR_OTA_VALIDATE_FAILED: " + problem)
        dev = _device(self.host)
        entries = read_entries(self.host, dev)
        slot = LABELS.index(self.label)
        count = len(LABELS)
        a = active_index(entries)
        if a < 0:  # both entries unusable (blank otadata): the first sector, seq = slot + 1
            _write_entry(dev, 0, slot + 1, NEW)
            return
        seq = entries[a].seq
        i = 0
        while seq > (slot + 1) % count + i * count:  # esp_rewrite_ota_data()
            i += 1
        _write_entry(dev, 1 - a, (slot + 1) % count + i * count, NEW)

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        """esp_ota_mark_app_valid_cancel_rollback(): the active entry becomes VALID (rewritten
        in its own sector) unless it already is."""
        dev = _device(cls._host)
        entries = read_entries(cls._host, dev)
        a = active_index(entries)
        if a < 0:
            raise OSError(-1, "ESP_FAIL")  # "Running firmware is factory": no usable otadata
        if entries[a].state != VALID:
            _write_entry(dev, a, entries[a].seq, VALID)


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
    """What the ESP-IDF bootloader does at every hard reset (bootloader_utility.c,
    get_selected_boot_partition and load_boot_image): an entry still PENDING_VERIFY from the
    previous boot becomes ABORTED; the valid entry with the highest ota_seq names the slot, a
    NEW one becomes PENDING_VERIFY (its one trial boot); blank otadata boots ota_0 and records
    it (seq 1, VALID); an image that fails validation makes it try the other slots. Returns
    {"slot", "state", "version"}; "slot" is None when no slot holds a bootable image."""
    dev = _device(host_dir)
    entries = read_entries(host_dir, dev)
    for i in (0, 1):
        if entries[i].state == PENDING:  # its trial boot ended without being marked valid
            print("[bootloader] %s was not confirmed: aborted" % LABELS[entries[i].slot()])
            _write_entry(dev, i, entries[i].seq, ABORTED)
            entries[i].state = ABORTED
    initial = False
    if entries[0].invalid() and entries[1].invalid():
        start = 0  # no factory app: try ota_0
        initial = entries[0].blank_or_bad() and entries[1].blank_or_bad()
    else:
        a = active_index(entries)
        if a < 0:
            start = 0  # "ota data partition invalid and no factory, will try all partitions"
        else:
            start = entries[a].slot()
            if entries[a].state == NEW:
                _write_entry(dev, a, entries[a].seq, PENDING)
    order = [start] + [i for i in range(start - 1, -1, -1)] + list(range(start + 1, len(LABELS)))
    for index in order:
        label = LABELS[index]
        path = host_dir + "/" + label + ".bin"
        if not _exists(path) or check_image(path, os.stat(path)[6]):
            print("[bootloader] OTA app partition slot %d is not bootable" % index)
            continue
        if initial:  # set_actual_ota_seq(): blank otadata gets the slot it booted, VALID
            _write_entry(dev, 0, index + 1, VALID)
        with open(host_dir + "/booted", "w") as f:  # in place: what runs, until the next reset
            f.write(label)
        state = slot_states(host_dir).get(label, "undefined")
        version = app_version(path)
        print("[bootloader] booting %s (%s) %s" % (label, state, version))
        return {"slot": label, "state": state, "version": version}
    print("[bootloader] No bootable app partitions in the partition table")
    return {"slot": None, "state": "undefined", "version": ""}
