# A fake serial MicroPython board, run by the unix port: littlefs (on the NOR flash model backed
# by an image file) mounted at '/', and MicroPython's raw REPL protocol served on stdin/stdout
# (a pty, set up by tests/ptydevice.py), so mpremote can drive it like a board on a USB port.
#
# Why our own loop: the unix port's REPL does speak the raw REPL, but Ctrl-D on an empty raw
# REPL exits the process instead of soft-resetting, and mpremote soft-resets on connect.
#
# usage: micropython ptydevice_main.py IMAGE BLOCKS VBOARD_DIR [VERSION]
# VERSION (e.g. 1.20.0): the MicroPython version the board reports in sys.implementation.
import gc
import sys

import vfs

IMAGE, BLOCKS, VBOARD = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, VBOARD)
from nor import NorFlash  # noqa: E402

WINDOW = 256  # raw-paste flow-control window, bytes
BANNER_RAW = b"raw REPL; CTRL-B to exit\r\n"

_in = sys.stdin.buffer
_out = sys.stdout.buffer


def write(data):
    _out.write(data)


def read1():
    b = _in.read(1)
    if not b:
        raise SystemExit(0)  # the host closed the pty: power off
    return b[0]


def mount():
    dev = NorFlash(BLOCKS, path=IMAGE)
    try:
        fs = vfs.VfsLfs2(dev)
    except OSError:  # a blank image: format it, as a board does on first boot
        vfs.VfsLfs2.mkfs(dev)
        fs = vfs.VfsLfs2(dev)
    vfs.umount("/")
    vfs.mount(fs, "/")
    import os

    os.chdir("/")


def fresh_globals():
    return {"__name__": "__main__"}


BASE_MODULES = None


def soft_reset():
    # As a board's soft reset: forget the user's modules and variables, keep the filesystem.
    for name in list(sys.modules):
        if name not in BASE_MODULES:
            del sys.modules[name]
    gc.collect()
    write(b"MPY: soft reboot\r\n")
    return fresh_globals()


def run(code, env):
    # Output goes to stdout as it happens; then EOF, the error text, EOF.
    try:
        exec(code, env)
        write(b"\x04")
    except BaseException as e:  # noqa: B036 - a REPL reports everything, KeyboardInterrupt too
        write(b"\x04")
        sys.print_exception(e, sys.stdout)
    write(b"\x04")


def raw_paste():
    # Ctrl-E 'A' Ctrl-A was read: accept, announce the window, take data until Ctrl-D.
    write(b"R\x01" + bytes((WINDOW & 0xFF, WINDOW >> 8)) + b"\x01")
    buf = bytearray()
    got = 0
    while True:
        c = read1()
        if c == 4:
            write(b"\x04")
            return bytes(buf)
        if c == 3:  # Ctrl-C aborts the paste
            write(b"\x04")
            return None
        buf.append(c)
        got += 1
        if got == WINDOW:
            got = 0
            write(b"\x01")


def raw_repl(env):
    # Returns the globals to continue with when leaving for the friendly REPL (Ctrl-B).
    write(BANNER_RAW + b">")
    buf = bytearray()
    while True:
        c = read1()
        if c == 1:  # Ctrl-A again: restart the raw REPL
            buf = bytearray()
            write(b"\r\n" + BANNER_RAW + b">")
        elif c == 2:  # Ctrl-B: friendly REPL
            write(b"\r\n")
            return env
        elif c == 3:  # Ctrl-C: drop what was typed
            buf = bytearray()
        elif c == 5 and not buf:  # Ctrl-E: maybe raw-paste
            if read1() == 65 and read1() == 1:
                code = raw_paste()
                if code is not None:
                    run(code, env)
                write(b">")
            else:
                write(b"R\x00")
        elif c == 4:
            if not buf:  # Ctrl-D on an empty buffer: soft reset, back into the raw REPL
                env = soft_reset()
                write(BANNER_RAW + b">")
                continue
            write(b"OK")
            run(bytes(buf), env)
            buf = bytearray()
            write(b">")
        else:
            buf.append(c)


def friendly_repl():
    # Just enough of the normal REPL: one line at a time, Ctrl-A to the raw REPL.
    env = fresh_globals()
    write(b"MicroPython (ptydevice) on littlefs\r\n>>> ")
    line = bytearray()
    while True:
        c = read1()
        if c == 1:
            write(b"\r\n")
            env = raw_repl(env)
            write(b">>> ")
        elif c == 3:
            line = bytearray()
            write(b"\r\nKeyboardInterrupt\r\n>>> ")
        elif c == 4 and not line:
            env = soft_reset()
            write(b">>> ")
        elif c in (10, 13):
            write(b"\r\n")
            if line:
                try:
                    exec(bytes(line), env)
                except Exception as e:
                    sys.print_exception(e, sys.stdout)
            line = bytearray()
            write(b">>> ")
        else:
            line.append(c)
            write(bytes((c,)))


class _Implementation:
    name = "micropython"


class _SysOfVersion:
    """`sys` as the code sent to the board sees it, reporting another MicroPython version."""

    def __init__(self, version):
        self.implementation = _Implementation()
        self.implementation.version = tuple(int(p) for p in version.split(".")) + ("",)

    def __getattr__(self, name):
        return getattr(sys, name)


if len(sys.argv) > 4:
    sys.modules["sys"] = _SysOfVersion(sys.argv[4])  # `import sys` in exec'd code finds this
mount()
BASE_MODULES = set(sys.modules)
friendly_repl()
