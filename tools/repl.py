"""The REPL transport of `ias deploy`: a MicroPython board on a serial port driven over the raw
REPL (mpremote's transport), and `sync()`, which copies a device tree ({device path: local
file}) to it, skipping files whose SHA-256 already matches on the board, writing each one to a
temp name then renaming it, and hashing every file again on the board afterwards.
The build (what the tree holds) is tools/deploy.py.
"""

import base64
import contextlib
import hashlib
import io
import os
import time

CONNECT_TIMEOUT = 10  # seconds for a board to answer on its port
CHUNK = 1024  # raw bytes per exec: 1368 base64 characters, small enough for an ESP8266 heap

# Runs on the board: prints "path sha256" per file, "path -" when missing.
_HASH_CODE = """import hashlib, binascii
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return '-'
    d = hashlib.sha256()
    b = bytearray(512)
    while True:
        n = f.readinto(b)
        if not n:
            break
        d.update(memoryview(b)[:n])
    f.close()
    return binascii.hexlify(d.digest()).decode()
for _p in %r:
    print(_p, _h(_p))
"""

_MKDIR_CODE = """import os
for _d in %r:
    try:
        os.mkdir(_d)
    except OSError:
        pass
"""

_OPEN_CODE = "from binascii import a2b_base64 as _a\n_f = open(%r, 'wb')\n_w = _f.write\n"
# Write to a temp name, then rename: a cut mid-copy never leaves a half file under the real name.
_CLOSE_CODE = """_f.close()
import os
try:
    os.rename(%(tmp)r, %(dest)r)
except OSError:
    os.remove(%(dest)r)
    os.rename(%(tmp)r, %(dest)r)
"""


class DeployError(Exception):
    pass


def check_port(port):
    if not port.startswith(("rfc2217://", "socket://")) and not os.path.exists(port):
        raise DeployError("no such serial port: %s" % port)


class Board:
    """A MicroPython board on a serial port, driven over the raw REPL (mpremote's transport)."""

    def __init__(self, port, attempts=5, delay=1.0, timeout=CONNECT_TIMEOUT):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        check_port(port)
        try:
            self.t = SerialTransport(port, baudrate=115200)
        except TransportError as e:
            raise DeployError("cannot open %s: %s (is another program using it?)" % (port, e))
        # A board that just reset is busy booting (first boot formats the filesystem): retry,
        # all within `timeout` seconds, so a port where nothing answers fails soon, in one line.
        end = time.monotonic() + timeout
        last = None
        # A pty is read blocking (no timeout): bound each read while connecting, so the
        # deadline is checked even when nothing at all comes back.
        self.t.serial.timeout = 0.5
        for _ in range(attempts):
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it got
                    self.t.enter_raw_repl(soft_reset=False, timeout_overall=left)
                break
            except TransportError as e:
                last = e
                time.sleep(min(delay, max(0, end - time.monotonic())))
        else:
            self.t.close()
            raise DeployError("no MicroPython raw REPL on %s: %s" % (port, last))
        self.t.serial.timeout = None
        if not self.t.in_raw_repl:
            self.t.close()
            raise DeployError(
                "nothing answered on %s within %g s: is a MicroPython board there and no other "
                "program (a serial monitor) using it? Press its reset button and try again"
                % (port, timeout)
            )

    def exec(self, code):
        from mpremote.transport import TransportError

        try:
            return self.t.exec(code).decode()
        except TransportError as e:
            lines = str(e).strip().splitlines() or [type(e).__name__]
            raise DeployError("board error: %s" % lines[-1])

    def platform(self):
        return self.exec("import sys\nprint(sys.platform)").strip()

    def version(self):
        """The board's MicroPython version, e.g. (1, 23, 0); () when it does not say."""
        text = self.exec("import sys\nprint(sys.implementation.version[:3])").strip()
        return tuple(int(p) for p in text.strip("()").split(",") if p.strip().isdigit())

    def hashes(self, paths):
        out = {}
        for line in self.exec(_HASH_CODE % (list(paths),)).splitlines():
            path, _, digest = line.strip().rpartition(" ")
            if path:
                out[path] = None if digest == "-" else digest
        return out

    def mkdirs(self, paths):
        dirs = set()
        for p in paths:
            parts = p.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/" + "/".join(parts[:i]))
        if dirs:
            self.exec(_MKDIR_CODE % (sorted(dirs, key=lambda d: (d.count("/"), d)),))

    def write_file(self, dest, data, progress=None):
        tmp = dest + ".tmp"
        self.exec(_OPEN_CODE % tmp)
        for i in range(0, len(data), CHUNK):
            chunk = data[i : i + CHUNK]
            self.exec("_w(_a(%r))" % base64.b64encode(chunk).decode())
            if progress:
                progress.update(len(chunk))
        self.exec(_CLOSE_CODE % {"tmp": tmp, "dest": dest})

    def close(self, reset=False):
        try:
            self.t.exit_raw_repl()
            if reset:
                self.t.serial.write(b"\x04")  # soft reset in the friendly REPL: boot.py, main.py
        finally:
            self.t.close()


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def sync(board, tree, stream=None):
    """Copy `tree` ({device path: local file}) to `board`, skipping files already in place.

    Returns {"copied": [...], "skipped": [...], "bytes": n}; raises DeployError when a file
    does not read back with the right hash."""
    from tools.progress import Progress

    if stream is not None:
        print("comparing %d files with the board ..." % len(tree), file=stream, flush=True)
    want = {p: sha256_file(local) for p, local in tree.items()}
    have = board.hashes(sorted(want))
    todo = [p for p in sorted(want) if have.get(p) != want[p]]
    skipped = [p for p in sorted(want) if p not in todo]
    total = sum(os.path.getsize(tree[p]) for p in todo)
    if todo:
        board.mkdirs(todo)
        with Progress(total, "deploy", stream=stream) as bar:
            for p in todo:
                with open(tree[p], "rb") as f:
                    data = f.read()
                bar.note = p
                board.write_file(p, data, bar)
    after = board.hashes(sorted(want))
    bad = [p for p in sorted(want) if after.get(p) != want[p]]
    if bad:
        raise DeployError("verification failed (hash differs on the board): " + ", ".join(bad))
    return {"copied": todo, "skipped": skipped, "bytes": total}
