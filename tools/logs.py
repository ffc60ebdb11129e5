"""`ias logs`: a board's log; the command lives in tools/status.py beside `ias status`."""

from tools.status import add_logs_parser


def add_parser(subparsers, summary):
    add_logs_parser(subparsers, summary)
