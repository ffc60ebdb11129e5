# A small levelled logger: every line goes to the console, and into a short list in RAM that
# flush() appends to /log.txt at the moments that matter (a call home that did something, an
# error, a boot event). A call home that found nothing new never flushes, so it writes no
# flash. The log is bounded: /log.txt is moved to /log.1 when it passes MAX_FILE.
import sys

from .reason import const

INFO = const(20)
WARN = const(30)
ERROR = const(40)
level = INFO

PATH = "/log.txt"
OLD = "/log.1"
MAX_FILE = const(2048)  # bytes of /log.txt before rotation: at most ~4 KiB of log in flash
MAX_LINES = const(12)  # lines held in RAM between flushes (oldest dropped): ~1.3 KiB
MAX_LINE = const(96)  # characters per line, the time stamp included

_lines = []
_clock = None  # the board's time() (Unix seconds), set by whoever opened the board


def set_clock(fn):
    global _clock
    _clock = fn


def _stamp():
    if _clock is None:
        return 0
    try:
        return int(_clock())
    except Exception:  # a log line must never raise
        return 0


def _emit(lvl, tag, msg):
    if lvl < level:
        return
    line = "%s %s: %s" % ("IWE"[(lvl - INFO) // 10], tag, msg)
    print(line)
    _lines.append(("%d %s" % (_stamp(), line))[:MAX_LINE])
    if len(_lines) > MAX_LINES:
        _lines.pop(0)


def info(tag, msg):
    _emit(INFO, tag, msg)


def warn(tag, msg):
    _emit(WARN, tag, msg)


def exc(tag, msg, e):
    _emit(ERROR, tag, "%s: %r" % (msg, e))
    sys.print_exception(e)
    flush()


def pending():
    """The lines not yet written to flash (newest last)."""
    return list(_lines)


def flush(path=None, old=None):
    """Append the lines held in RAM to the log file in one bounded write, rotating it first
    when full. littlefs commits an append at close: a power cut keeps the file as it was.
    Never raises (a full or failing flash must not stop the device)."""
    global _lines
    if not _lines:
        return False
    import os

    path, old = path or PATH, old or OLD
    data = "\n".join(_lines) + "\n"
    try:
        try:
            size = os.stat(path)[6]
        except OSError:
            size = 0
        if size + len(data) > MAX_FILE:
            os.rename(path, old)  # replaces the older file (littlefs rename is atomic)
        with open(path, "a") as f:
            f.write(data)
    except OSError as e:
        print("W log: not written: %r" % e)
        return False
    _lines = []
    return True


def tail(n=20, path=None, old=None):
    """The last `n` lines of the log, the ones still in RAM included, oldest first; read a
    line at a time so RAM holds only `n` lines."""
    out = []
    for p in (old or OLD, path or PATH):
        try:
            with open(p) as f:
                for line in f:
                    out.append(line.rstrip("\n"))
                    if len(out) > n:
                        out.pop(0)
        except OSError:
            pass
    out.extend(_lines)
    return out[-n:]
