"""`ias`: one command for the host side of the IAS MicroPython client.

Each subcommand lives in its own module under tools/ with an `add_parser(subparsers)` function,
so it can also run alone as `python tools/NAME.py`.
"""

import argparse
import importlib
import sys

# (command, what it does), in the order a newcomer meets them; the module is tools/<command>.py
# unless MODULES names another.
MODULES = {"serve": "server"}
COMMANDS = [
    ("demo", "run the whole story on a virtual board: update, CA change, recovery, rollback"),
    ("sim", "virtual boards: the firmware on the MicroPython unix port"),
    ("serve", "an IAS-compatible update server (HTTPS) for development, tests and self-hosting"),
    ("keys", "create the update-signing key pair or rotate it"),
    ("bundle", "build and sign app bundles and anchor bundles"),
    ("publish", "write a signed static update channel for any static host or CDN"),
    ("flash", "erase a board and write MicroPython with esptool, then deploy"),
    ("deploy", "compile firmware/ with mpy-cross and copy it to a board with mpremote"),
    ("status", "a board's state: app, trial, firmware, anchors, last call home, settings"),
    ("logs", "a board's log, from its flash (virtual board) or over its serial port"),
]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ias",
        description="Host tools for the IAS MicroPython OTA client (ESP32, ESP8266, virtual).",
    )
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    subs.required = True
    for name, summary in COMMANDS:
        module = importlib.import_module("tools." + MODULES.get(name, name))
        module.add_parser(subs, summary)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("ias %s: stopped (Ctrl-C)" % args.command, file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as e:  # one clear line for the user; tracebacks are for developers
        if getattr(args, "debug", False):
            raise
        if isinstance(e, FileNotFoundError) and e.filename:
            e = "no such file: %s" % e.filename
        print("ias %s: error: %s" % (args.command, e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
