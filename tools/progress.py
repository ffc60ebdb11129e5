"""A tiny progress bar for long host work (download, flash, deploy); no dependencies.

On a terminal it redraws one line in place; elsewhere (logs, CI, pipes) it prints only the
final line, so captured output stays readable.
"""

import sys
import time


def _size(n):
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return str(n)


class Progress:
    """`with Progress(total, "deploy") as bar: bar.update(n)`; `total` in bytes (or items)."""

    def __init__(self, total, label="", stream=None, width=30, unit="bytes", live=None):
        self.total = max(int(total), 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.unit = unit
        self.done = 0
        self.note = ""
        self.started = time.monotonic()
        isatty = getattr(self.stream, "isatty", None)
        self.live = live if live is not None else bool(isatty and isatty())
        self._last = 0.0
        self._closed = False

    def fraction(self):
        return 1.0 if self.total == 0 else min(self.done / self.total, 1.0)

    def line(self):
        frac = self.fraction()
        full = int(frac * self.width)
        bar = "#" * full + "-" * (self.width - full)
        if self.unit == "bytes":
            amount = "%s/%s" % (_size(self.done), _size(self.total))
        else:
            amount = "%d/%d %s" % (self.done, self.total, self.unit)
        text = "%s [%s] %3d%% %s" % (self.label, bar, int(frac * 100), amount)
        return text + ("  " + self.note if self.note else "")

    def update(self, n=1, note=None):
        self.done += n
        if note is not None:
            self.note = note
        now = time.monotonic()
        if self.live and (now - self._last >= 0.05 or self.done >= self.total):
            self._last = now
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()

    def set(self, done, note=None):
        self.update(done - self.done, note)

    def close(self):
        if self._closed:
            return
        self._closed = True
        secs = time.monotonic() - self.started
        self.stream.write(("\r" if self.live else "") + self.line() + " in %.1f s\n" % secs)
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
