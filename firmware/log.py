# A small levelled logger: the console always, and the board's log where it keeps one.
import sys

from .reason import const

DEBUG = const(10)
INFO = const(20)
WARN = const(30)
ERROR = const(40)
level = INFO
_NAMES = {DEBUG: "D", INFO: "I", WARN: "W", ERROR: "E"}


def _emit(lvl, tag, msg):
    if lvl >= level:
        print("%s %s: %s" % (_NAMES[lvl], tag, msg))


def debug(tag, msg):
    _emit(DEBUG, tag, msg)


def info(tag, msg):
    _emit(INFO, tag, msg)


def warn(tag, msg):
    _emit(WARN, tag, msg)


def error(tag, msg):
    _emit(ERROR, tag, msg)


def exc(tag, msg, e):
    _emit(ERROR, tag, "%s: %r" % (msg, e))
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)
    else:  # CPython, when a module is fuzzed or tested there
        import traceback

        traceback.print_exception(e)
