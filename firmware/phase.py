# Phases of the device's work (call home, install, anchors, channel, config mode) import their
# modules when they start and release them when they end, so the heap's peak is the largest
# phase, not the sum of all. A released module is imported afresh by its next user.
import gc
import sys

_PREFIX = __name__[: __name__.rfind(".") + 1]  # "ias.": the client's package
# Modules that hold state for the device's whole life stay, whoever imported them first.
_STAY = ("board", "vpartition", "log", "reason", "phase")


def loaded():
    """The names of the modules loaded now (a snapshot to give release())."""
    return set(sys.modules)


def release(before):
    """Drop the client's modules imported since the snapshot `before`: out of sys.modules and
    off the package (where `from . import x` left them); objects still in use keep their own
    module alive until they go. Then collect."""
    pkg = sys.modules.get(_PREFIX[:-1])
    for name in [n for n in sys.modules if n not in before and n.startswith(_PREFIX)]:
        short = name[len(_PREFIX) :]
        if short.startswith(_STAY):
            continue
        del sys.modules[name]
        if pkg is not None and short in pkg.__dict__:
            delattr(pkg, short)
    gc.collect()
