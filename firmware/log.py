# A small levelled logger on the console (the virtual board's host keeps what it prints).
import sys

from .reason import const

INFO = const(20)
WARN = const(30)
ERROR = const(40)
level = INFO


def _emit(lvl, tag, msg):
    if lvl >= level:
        print("%s %s: %s" % ("IWE"[(lvl - INFO) // 10], tag, msg))


def info(tag, msg):
    _emit(INFO, tag, msg)


def warn(tag, msg):
    _emit(WARN, tag, msg)


def exc(tag, msg, e):
    _emit(ERROR, tag, "%s: %r" % (msg, e))
    sys.print_exception(e)
