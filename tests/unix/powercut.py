# Power-cut sweeps: run an operation on a littlefs image, cutting power at every program and
# erase op in turn; after each cut, remount the surviving bytes and let the caller check them.
import gc
import os
import sys

import vfs
from nor import NorFlash, PowerCut, mount

WHERE = "/pc"


def fresh_image(prepare, blocks=64):
    """A formatted image with `prepare(root)` applied, ready for sweeps."""
    dev = NorFlash(blocks)
    mount(dev, WHERE, mkfs=True)
    try:
        prepare(WHERE)
    finally:
        vfs.umount(WHERE)
    return dev.image()


def sweep(image, operation, check, torn=True, limit=100000):
    """Cut at op 1, 2, ... until the operation completes. `check(root, completed)` judges each
    outcome and returns a label (e.g. 'old' / 'new'); raises AssertionError when it is wrong.
    Returns (cut points tried, {label: count})."""
    outcomes = {}
    n = 1
    while n < limit:
        gc.collect()  # two image-sized buffers per cut: free the last ones before asking again
        dev = NorFlash.from_image(image)
        dev.cut_at = n
        dev.torn = torn
        mount(dev, WHERE)
        completed = False
        try:
            operation(WHERE)
            completed = True
        except PowerCut:
            pass
        except OSError:
            if not dev.dead:
                raise
        try:
            vfs.umount(WHERE)
        except OSError:
            pass
        after = NorFlash.from_image(dev.mem)
        mount(after, WHERE)  # must mount: a cut never leaves an unmountable filesystem
        try:
            label = check(WHERE, completed)
        finally:
            vfs.umount(WHERE)
        outcomes[label] = outcomes.get(label, 0) + 1
        if completed:
            return n, outcomes
        n += 1
    raise AssertionError("operation did not complete within %d ops" % limit)


def report(name, tried, outcomes):
    print("power-cut sweep %s: %d cut points, outcomes %r" % (name, tried, outcomes))
    sys.stdout.flush() if hasattr(sys.stdout, "flush") else None


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return None
