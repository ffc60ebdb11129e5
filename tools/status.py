"""`ias status` and `ias logs`: a board's state and log, read from the board itself.

TARGET is a virtual board's folder (its flash image is mounted read-only: nothing on it
changes) or a real board's serial port (read over the raw REPL, as `ias deploy` does; the
board's program is interrupted and soft-reset afterwards). The same small MicroPython script
reads the files on both; the host decodes them: the installed app and its trial, the firmware,
the anchors' earliest expiry, the last call home the log recorded, and the settings without
their secrets.
"""

import argparse
import base64
import json
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import VBOARD

FILES = ("/settings.json", "/state.json", "/app.json", "/log.1", "/log.txt")
SECRET_WORDS = ("password", "secret", "token", "key", "act_code")
BLOCK = 4096

# Runs on the board (or on the unix port over a mounted image under ROOT): prints each file in
# base64 chunks small enough for an ESP8266's heap, the MicroPython version, and the log lines
# still in RAM when the client was running.
_READ_CODE = """import os, sys, binascii
def _o(p):
    try:
        f = open(%(root)r + p, 'rb')
    except OSError:
        return
    b = bytearray(384)
    print('@@F', p, '')
    while True:
        n = f.readinto(b)
        if not n:
            break
        print('@@F', p, binascii.b2a_base64(memoryview(b)[:n]).decode().strip())
    f.close()
for _p in %(files)r:
    _o(_p)
for _d in ('/cert', '/keys'):
    try:
        _l = os.listdir(%(root)r + _d)
    except OSError:
        _l = ()
    for _n in _l:
        _o(_d + '/' + _n)
print('@@MP', '.'.join(str(v) for v in sys.implementation.version[:3]), sys.platform)
_m = sys.modules.get('ias.log')
if _m:
    for _x in _m.pending():
        print('@@P', _x)
"""

# Mounts a virtual board's flash image read-only under /img for _READ_CODE.
_MOUNT_CODE = """import sys, vfs
sys.path.insert(0, %(vboard)r)
from nor import NorFlash
vfs.mount(vfs.VfsLfs2(NorFlash(%(blocks)d, path=%(image)r)), '/img', readonly=True)
"""


class StatusError(Exception):
    pass


def parse_dump(text):
    """{"files": {path: bytes}, "micropython": "1.29.0", "platform": ..., "pending": [...]}"""
    files, out = {}, {"pending": []}
    for line in text.splitlines():
        if line.startswith("@@F "):
            path, _, chunk = line[4:].partition(" ")
            files.setdefault(path, b"")
            if chunk.strip():
                files[path] += base64.b64decode(chunk.strip())
        elif line.startswith("@@MP "):
            parts = line[5:].split()
            out["micropython"] = parts[0] if parts else ""
            out["platform"] = parts[1] if len(parts) > 1 else ""
        elif line.startswith("@@P "):
            out["pending"].append(line[4:])
    out["files"] = files
    return out


def read_virtual(folder):
    """The board's files from its flash image, mounted read-only by the unix port."""
    from tools.sim import micropython

    image = Path(folder) / "flash.bin"
    blocks = image.stat().st_size // BLOCK
    code = _MOUNT_CODE % {"vboard": str(VBOARD), "blocks": blocks, "image": str(image)}
    code += _READ_CODE % {"root": "/img", "files": FILES}
    run = subprocess.run(
        [micropython(), "-c", code], capture_output=True, text=True, timeout=60, errors="replace"
    )
    if run.returncode != 0:
        last = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
        raise StatusError("cannot read the flash of %s: %s" % (folder, last[0]))
    dump = parse_dump(run.stdout)
    hw = _json((Path(folder) / "board.json").read_bytes(), {})
    dump["board"] = "virtual %s in %s (%s)" % (hw.get("chip", "esp32"), folder, hw.get("mac"))
    return dump


def read_serial(port, reset=True):
    """The board's files over its raw REPL; the board is soft-reset afterwards (its program
    runs again) unless `reset` is False."""
    from tools.repl import Board, DeployError

    try:
        board = Board(port)
    except DeployError as e:
        raise StatusError(str(e))
    try:
        text = board.exec(_READ_CODE % {"root": "", "files": FILES})
    except DeployError as e:
        raise StatusError(str(e))
    finally:
        board.close(reset=reset)
    dump = parse_dump(text)
    dump["board"] = "%s on %s" % (dump.get("platform") or "board", port)
    return dump


def read(target, reset=True):
    t = str(target)
    if Path(t).is_dir():
        if not (Path(t) / "flash.bin").exists():
            raise StatusError("%s holds no virtual board (no flash.bin)" % t)
        return read_virtual(t)
    if t.startswith(("/dev/", "rfc2217://", "socket://", "COM")):
        return read_serial(t, reset)
    raise StatusError(
        "%s is neither a virtual board's folder nor a serial port (e.g. /dev/ttyUSB0)" % t
    )


# -- decoding -----------------------------------------------------------------------------------
def _json(data, default):
    if data is None:
        return default
    try:
        value = json.loads(data)
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def when(t):
    """Unix seconds as a UTC date. Before NTP answered the board counts from 2000-01-01
    (board.time()): such times are shown as seconds since its boot."""
    if not t:
        return "clock unset"
    if t < 978307200:
        return "%ds after boot" % max(t - 946684800, 0)
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def log_lines(dump):
    """The log, oldest first: /log.1, /log.txt, then lines still in RAM (a running board)."""
    lines = []
    for p in ("/log.1", "/log.txt"):
        data = dump["files"].get(p)
        if data:
            lines += data.decode("utf-8", "replace").splitlines()
    return [ln for ln in lines + dump["pending"] if ln.strip()]


def split_line(line):
    """(unix seconds, text) of one log line ("1764691200 I callhome: ...")."""
    stamp, _, rest = line.partition(" ")
    try:
        return int(stamp), rest
    except ValueError:
        return None, line


def readable(line):
    t, rest = split_line(line)
    return rest if t is None else "%s  %s" % (when(t), rest)


def without_secrets(settings):
    out = {}
    for k, v in settings.items():
        if k == "wifi" and isinstance(v, list):
            out[k] = [n.get("ssid") for n in v if isinstance(n, dict)]
        elif any(w in k.lower() for w in SECRET_WORDS):
            out[k] = "(set)" if v else ""
        else:
            out[k] = v
    return out


def anchors(files, now):
    """[{name, subject, not_after}] of the certificates in /cert, earliest expiry first."""
    from cryptography import x509

    out = []
    for path, data in sorted(files.items()):
        if not path.startswith("/cert/") or not path.endswith(".cer"):
            continue
        try:
            if b"-----BEGIN" in data:
                cert = x509.load_pem_x509_certificate(data)
            else:
                cert = x509.load_der_x509_certificate(data)
        except ValueError:
            out.append({"name": path[6:], "subject": "(unreadable)", "not_after": None})
            continue
        end = int(cert.not_valid_after_utc.timestamp())
        out.append({"name": path[6:], "subject": cert.subject.rfc4514_string(), "not_after": end})
    out.sort(key=lambda a: a["not_after"] if a["not_after"] is not None else 1 << 62)
    return out


def last_call(lines):
    """The last call home the log recorded: (unix seconds, text) or None."""
    for line in reversed(lines):
        t, rest = split_line(line)
        if " callhome: " in " " + rest and "calling home" not in rest:
            return {"time": t, "line": rest[2:] if rest[1:2] == " " else rest}
    return None


def status(dump, now=None):
    """The board's status as a dict (what `ias status --json` prints)."""
    now = int(time.time()) if now is None else now
    f = dump["files"]
    ptr = _json(f.get("/app.json"), {})
    state = _json(f.get("/state.json"), {})
    settings = _json(f.get("/settings.json"), {})
    trial = ptr.get("trial")
    certs = anchors(f, now)
    dated = [c for c in certs if c["not_after"] is not None]
    lines = log_lines(dump)
    return {
        "board": dump.get("board"),
        "app": {
            "name": ptr.get("name") or settings.get("app_name"),
            "version": ptr.get("version") or settings.get("app_version"),
            "slot": ptr.get("active"),
        },
        "trial": trial,
        "firmware": "MicroPython %s (%s)"
        % (dump.get("micropython", "?"), dump.get("platform", "?")),
        "anchors": len(certs),
        "earliest_expiry": dated[0] if dated else None,
        "update_keys": sorted(p[6:] for p in f if p.startswith("/keys/")),
        "last_call": last_call(lines),
        "last_error": state.get("last_error") or state.get("ota_error"),
        "settings": without_secrets(settings),
        "log_lines": len(lines),
    }


def format_status(st, now=None):
    now = int(time.time()) if now is None else now
    app = st["app"]
    rows = [("board", st["board"])]
    installed = "%s %s" % (app["name"] or "(none)", app["version"] or "")
    if app["slot"]:
        installed += " in %s" % app["slot"]
    rows.append(("app", installed.strip()))
    t = st["trial"]
    if t:
        rows.append(
            (
                "trial",
                "on trial: boot %s, since %s (not yet confirmed by its update source)"
                % (t.get("boots", 0), when(t.get("since"))),
            )
        )
    else:
        rows.append(("trial", "none: the running version is committed"))
    rows.append(("firmware", st["firmware"]))
    e = st["earliest_expiry"]
    if e:
        days = (e["not_after"] - now) // 86400
        rows.append(
            (
                "anchors",
                "%d; earliest expiry %s (%s, %s, %d days left)"
                % (st["anchors"], when(e["not_after"]), e["name"], e["subject"], days),
            )
        )
    else:
        rows.append(("anchors", "%d (none readable)" % st["anchors"]))
    rows.append(("update keys", ", ".join(st["update_keys"]) or "none"))
    c = st["last_call"]
    rows.append(("last call", "%s: %s" % (when(c["time"]), c["line"]) if c else "none recorded"))
    if st["last_error"]:
        rows.append(("last error", st["last_error"]))
    s = st["settings"]
    for k in sorted(s):
        rows.append(("  " + k, json.dumps(s[k])))
    width = max(len(k) for k, _ in rows)
    head = ["%-*s  %s" % (width, k, v) for k, v in rows if not k.startswith("  ")]
    tail = ["%-*s  %s" % (width, k, v) for k, v in rows if k.startswith("  ")]
    return "\n".join(head + ["settings (secrets hidden):"] + tail)


# -- commands -----------------------------------------------------------------------------------
def cmd_status(args):
    try:
        dump = read(args.target, reset=not args.no_reset)
    except StatusError as e:
        raise SystemExit("ias status: %s" % e)
    st = status(dump)
    print(json.dumps(st, indent=1) if args.json else format_status(st))
    return 0


def cmd_logs(args):
    try:
        dump = read(args.target, reset=not args.no_reset)
    except StatusError as e:
        raise SystemExit("ias logs: %s" % e)
    lines = log_lines(dump)
    if args.lines:
        lines = lines[-args.lines :]
    if args.json:
        print(json.dumps(lines))
    elif not lines:
        print("the log is empty (nothing worth keeping has happened yet)")
    else:
        print("\n".join(readable(ln) for ln in lines))
    return 0


def _common(p):
    p.add_argument("target", metavar="DIR_OR_PORT", help="a virtual board's folder or a port")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--no-reset", action="store_true", help="leave a real board at its REPL afterwards"
    )


def add_parser(subparsers, summary):
    p = subparsers.add_parser(
        "status",
        help=summary,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.set_defaults(func=cmd_status)


def add_logs_parser(subparsers, summary):
    p = subparsers.add_parser(
        "logs",
        help=summary,
        description="Print a board's log (/log.1, /log.txt and, on a running board, the lines "
        "still in RAM), oldest first, with UTC dates. TARGET: a virtual board's folder or a "
        "serial port.",
    )
    _common(p)
    p.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N lines")
    p.set_defaults(func=cmd_logs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="ias")
    subs = parser.add_subparsers(dest="command")
    add_parser(subs, "a board's state")
    add_logs_parser(subs, "a board's log")
    args = parser.parse_args()
    sys.exit(args.func(args) or 0)
