# Runs one test module inside the MicroPython unix port and reports each test on its own line,
# for tests/mprunner.py. MicroPython's unittest.main() exits 0 even on failure; this runner
# reports every outcome explicitly and ends with a marker, so a crash cannot pass for success.
import io
import json
import sys


class SkipTest(Exception):
    """Raise with the reason to skip a test."""


def _report(name, status, detail=""):
    print("@@MPT " + json.dumps({"n": name, "s": status, "d": detail}))


def _trace(e):
    buf = io.StringIO()
    sys.print_exception(e, buf)
    return buf.getvalue()


def _private_log():
    # The device's log file is /log.txt; on the unix port that is the host's root: the tests'
    # lines go to a file of this run instead.
    try:
        from ias import log
    except ImportError:
        return
    import random

    log.PATH = "/tmp/mpt-log-%d.txt" % random.getrandbits(30)
    log.OLD = log.PATH + ".1"
    return log


def _drop_log(log):
    import os

    for p in (log.PATH, log.OLD) if log else ():
        try:
            os.remove(p)
        except OSError:
            pass


def run(path):
    log = _private_log()
    try:
        _run(path)
    finally:
        _drop_log(log)


def _run(path):
    modname = path.rsplit("/", 1)[-1][:-3]
    sys.modules["mptest"] = sys.modules[__name__]
    try:
        mod = __import__(modname)
    except SkipTest as e:
        _report("*", "skip", str(e))
        print("@@MPT-END")
        return
    names = sorted(n for n in dir(mod) if n.startswith("test_"))
    for name in names:
        fn = getattr(mod, name)
        print("@@MPT-BEGIN " + name)
        try:
            fn()
        except SkipTest as e:
            _report(name, "skip", str(e) or "skipped")
        except Exception as e:  # a failed assert and any error both fail the test
            _report(name, "fail", _trace(e))
        else:
            _report(name, "pass")
    print("@@MPT-END")


if __name__ == "__main__":
    run(sys.argv[1])
