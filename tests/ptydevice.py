"""A fake serial MicroPython board: mpremote connects to /dev/pts/N as to a USB port.

The unix-port `micropython` runs tests/ptydevice_main.py on the master side of a pseudo-terminal:
its root filesystem is littlefs on the NOR flash model (tools/vboard/nor.py) backed by an image
file, and it serves MicroPython's raw REPL (and raw-paste mode). The slave side, /dev/pts/N, is
the "serial port" mpremote opens. The image stays on disk after `close()`, so a test can mount it
again and look at what landed on the "flash".
"""

import os
import pty
import subprocess
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = os.environ.get("MICROPYTHON", str(ROOT / ".venv" / "bin" / "micropython"))
MAIN = Path(__file__).resolve().parent / "ptydevice_main.py"
VBOARD = ROOT / "tools" / "vboard"
BLOCK = 4096


class PtyDevice:
    def __init__(self, image, blocks=256, log=None, version=None):
        self.image = Path(image)
        self.blocks = blocks
        if not self.image.exists():
            self.image.write_bytes(b"\xff" * (blocks * BLOCK))  # erased NOR flash
        self.log_path = Path(log) if log else self.image.with_suffix(".log")
        self.master, self.slave = pty.openpty()
        # Raw from the start: no echo or line editing before mpremote (pyserial) opens the port.
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self._log = open(self.log_path, "wb")
        # version: the MicroPython version the fake board reports ("1.20.0"), else its own
        self.proc = subprocess.Popen(
            [MICROPYTHON, str(MAIN), str(self.image), str(blocks), str(VBOARD)]
            + ([version] if version else []),
            stdin=self.master,
            stdout=self.master,
            stderr=self._log,
            close_fds=True,
        )
        # We keep the slave open so the pty survives between mpremote sessions.

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Runs on the unix port against a closed image: list every file with its size and SHA-256.
_LIST_SCRIPT = """
import sys, os, vfs, hashlib, binascii
sys.path.insert(0, %(vboard)r)
from nor import NorFlash
fs = vfs.VfsLfs2(NorFlash(%(blocks)d, path=%(image)r))
vfs.mount(fs, '/img')
def walk(d):
    for e in os.ilistdir('/img' + d):
        p = d.rstrip('/') + '/' + e[0]
        if e[1] == 0x4000:
            walk(p)
        else:
            h = hashlib.sha256()
            with open('/img' + p, 'rb') as f:
                while True:
                    b = f.read(1024)
                    if not b:
                        break
                    h.update(b)
            print(p, e[3] if len(e) > 3 else -1, binascii.hexlify(h.digest()).decode())
walk('/')
"""


def list_image(image, blocks=256):
    """{device path: (size, sha256 hex)} of the files in a littlefs image not in use."""
    script = _LIST_SCRIPT % {"vboard": str(VBOARD), "blocks": blocks, "image": str(image)}
    out = subprocess.run(
        [MICROPYTHON, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    files = {}
    for line in out.splitlines():
        path, size, digest = line.split()
        files[path] = (int(size), digest)
    return files
