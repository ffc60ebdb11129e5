"""`ias sim`: virtual boards. The firmware runs on the MicroPython unix port from a littlefs image.

A virtual board is a folder: flash.bin (littlefs on a NOR flash model), board.json (its hardware),
run.json (facts for the next boot), ota_*.bin/otadata.bin (ESP32 app slots), console.log,
flash_ops.jsonl (the flash program and erase operations of each power-on), romfs.img (the
client as a ROMFS image, with --romfs).
"""

import argparse
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import FIRMWARE, REPO, VBOARD, bundle

EXIT_RESET, EXIT_HALT, EXIT_POWER_CUT, EXIT_REPL = 75, 76, 77, 1
EXIT_PANIC, EXIT_NO_APP = 78, 79  # tools/vboard/launch.py: a firmware panic; nothing bootable
DEFAULT_WIFI = {"ssid": "ias-lab", "password": "lab-password"}


def micropython():
    env = os.environ.get("MICROPYTHON")
    if env:
        return env
    local = Path(sys.executable).parent / "micropython"
    return str(local) if local.exists() else (shutil.which("micropython") or "micropython")


def _mac_for(folder):
    digest = hashlib.sha256(str(Path(folder).resolve()).encode()).digest()
    return "24:0A:C4:" + ":".join("%02X" % b for b in digest[:3])


def stage_firmware(dest, chip, romfs_image=None):
    """The files the virtual board's flash gets: boot.py, main.py, the compiled client and
    Microdot in /lib, and /www (compile_firmware copies the assets). With `romfs_image`, the
    client and Microdot go into that ROMFS image instead of /lib (tools/romfs.py)."""
    from tools.deploy import compile_firmware
    from tools.mplib import stage_libs

    compile_firmware(dest, target="unix")
    stage_libs(Path(dest) / "lib")
    if romfs_image:
        from tools import romfs

        romfs.build(str(romfs_image), target="unix")
        shutil.rmtree(Path(dest) / "lib")  # all of /lib is in the image


def _refuse(what):
    raise SystemExit("ias sim init: %s; nothing written" % what)


def check_inputs(args):
    """Every file `ias sim init` would put into the flash, checked before anything is written:
    one line naming the option and what to do, and no board left half made."""
    from tools.deploy import BuildError, check_anchor, check_update_key

    for pem in args.anchor:
        if not Path(pem).is_file():
            _refuse("--anchor %s: no such file" % pem)
        try:
            check_anchor(pem)
        except BuildError:
            _refuse("--anchor %s is not a certificate (give a CA's PEM or DER file)" % pem)
    if args.update_key:
        key = Path(args.update_key)
        if not key.is_file():
            _refuse("--update-key %s: no such file" % key)
        try:
            check_update_key(str(key))
        except BuildError:
            if b"PRIVATE KEY" in key.read_bytes():
                _refuse(
                    "--update-key %s is a PRIVATE key: give its public half (%s)"
                    % (key, key.with_suffix(".pub"))
                )
            _refuse("--update-key %s is not a PEM public key (see `ias keys new`)" % key)
    if args.app and not (Path(args.app) / "app.py").is_file():
        _refuse("--app %s holds no app.py (see examples/blink)" % args.app)


def init(args):
    folder = Path(args.dir)
    if (folder / "flash.bin").exists() and not args.force:
        raise SystemExit(
            "ias sim init: %s already holds a board (use --force to replace it)" % folder
        )
    check_inputs(args)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(folder)) - {"flash.bin", "board.json"}
    try:
        return _init(folder, args)
    except BaseException:  # no half-made board: `sim init` must not then say "already holds"
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            for name in set(os.listdir(folder)) - before:
                if not (folder / name).is_dir():
                    (folder / name).unlink(missing_ok=True)
        raise


def _init(folder, args):
    for old in (
        "flash.bin",
        "run.json",
        "cycles",
        "console.log",
        "flash_ops.jsonl",
        "clock.json",
        "otadata.json",
        "otadata.bin",
        "booted",
        "ota_0.bin",
        "ota_1.bin",
        "romfs.img",
    ):
        (folder / old).unlink(missing_ok=True)
    hw = {
        "chip": args.chip,
        "mac": args.mac or _mac_for(folder),
        "flash_size": 4 * 1024 * 1024,
        "flash_id": 1458400 if args.chip == "esp32" else 1458270,
        "networks": [DEFAULT_WIFI] if not args.no_wifi else [],
        "ntp": "host",
        "fast_time": True,
        "config_port": args.config_port,
    }
    (folder / "board.json").write_text(json.dumps(hw, indent=1))
    (folder / "flash.bin").write_bytes(b"\xff" * (args.flash_kib * 1024))

    with tempfile.TemporaryDirectory(dir=folder, prefix=".deploy-") as tmp:
        stage = Path(tmp)
        stage_firmware(stage, args.chip, romfs_image=folder / "romfs.img" if args.romfs else None)
        cert = stage / "cert"
        cert.mkdir()
        anchors = [Path(a) for a in args.anchor] or sorted((FIRMWARE / "cert").glob("*.cer"))
        for i, pem in enumerate(anchors):
            name = pem.name if pem.suffix == ".cer" else pem.stem + ".cer"
            if i == 0 and args.anchor:
                name = "iasRootCa.cer"  # the primary keeps the IAS name
            (cert / name).write_bytes(pem.read_bytes())
        if args.update_key:
            (stage / "keys").mkdir()
            shutil.copy(args.update_key, stage / "keys" / "update.pub")
        app_src = Path(args.app) if args.app else REPO / "examples" / "blink"
        settings = {
            "wifi": [] if args.no_wifi else [DEFAULT_WIFI],
            "server": args.server,
            "app_name": args.app_name,
            "app_version": args.app_version,
            "app_md5": bundle.app_md5(app_src),
            "interval": args.interval,
            "recovery": args.recovery,
            "channel": args.channel or "",
        }
        (stage / "settings.json").write_text(json.dumps(settings))
        _stage_app(stage, app_src, args.app_name, args.app_version)
        if args.chip == "esp32":
            _init_partitions(folder)
        result = run_board(folder, "format", stage.name, echo=False)
        if result.code != 0:
            last = (result.output.strip().splitlines() or ["no output"])[-1]
            if "OSError: 28" in last:  # ENOSPC
                raise SystemExit(
                    "ias sim init: the firmware does not fit in %d KiB of flash: give a larger "
                    "--flash-kib (default 2048); nothing kept" % args.flash_kib
                )
            raise SystemExit("ias sim init: writing the flash failed (%s); nothing kept" % last)
    print("virtual %s ready in %s (%s)" % (args.chip, folder, hw["mac"]))
    return 0


def _stage_app(stage, app_src, name, version):
    slot = stage / "slot_a"
    shutil.copytree(app_src, slot, ignore=shutil.ignore_patterns("__pycache__"))
    (stage / "app.json").write_text(
        json.dumps({"active": "slot_a", "name": name, "version": version, "counter": 0})
    )


def _init_partitions(folder):
    """Two 1.5 MiB app slots as the OTA variant has; ota_0 holds a factory image and otadata
    (two 4 KiB sectors) is erased, as after flashing a combined firmware.bin: the first boot's
    bootloader records ota_0 (seq 1, valid)."""
    from tools.espimage import app_image

    image = app_image(version="v1.29.0", project="micropython")
    for i in (0, 1):
        data = image if i == 0 else b""
        (folder / ("ota_%d.bin" % i)).write_bytes(data + b"\xff" * (0x180000 - len(data)))
    (folder / "otadata.bin").write_bytes(b"\xff" * 0x2000)


class BoardRun:
    def __init__(self, code, output, result=None):
        self.code = code
        self.output = output
        self.result = result


def _die_with_parent():
    # In its own session the board no longer shares the host's process group: have the kernel
    # end it when the host process ends, however that happens (SIGKILL included). Linux only.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass


def run_board(folder, mode="boot", arg=None, echo=True, timeout=300, log=None):
    """One power-on of the virtual board, until it resets, halts or stops."""
    folder = Path(folder).resolve()
    cmd = [micropython(), str(VBOARD / "launch.py"), str(folder)]
    if mode != "boot":
        cmd += ["--run", mode] + ([str(arg)] if arg is not None else [])
    env = dict(os.environ, MICROPYPATH=str(VBOARD) + ":.frozen")
    # Its own session: a Ctrl-C at the terminal reaches the host side only, which then stops the
    # board (stop_board) instead of the MicroPython process dying with a traceback mid-write.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(VBOARD),
        text=True,
        errors="replace",
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    lines = []
    deadline = time.monotonic() + timeout
    try:
        return _follow(proc, lines, deadline, echo, log)
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C, SIGTERM): the board loses power
            proc.kill()
            proc.wait()


def _follow(proc, lines, deadline, echo, log):
    result = None
    try:
        for line in proc.stdout:
            if line.startswith("@@RESULT "):
                result = json.loads(line[9:])
                continue
            lines.append(line)
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
            if log is not None:
                log.write(line)
            if time.monotonic() > deadline:
                break
        proc.wait(timeout=max(1, deadline - time.monotonic()))
        code = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = "watchdog"
    if proc.poll() is None:  # the deadline passed while it was still talking
        proc.kill()
        proc.wait()
        code = "watchdog"
    return BoardRun(code, "".join(lines), result)


def stop_board(folder):
    """After the host stopped a board mid-run (its power cut): remove the temp files of the
    writes that were cut, so the flash holds only whole files. Returns their paths."""
    run = run_board(folder, "tidy", echo=False, timeout=60)
    return run.output.split() if run.code == 0 else []


class Stopped(Exception):
    """SIGTERM, turned into an exception so the board is stopped as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Stopped()


def interruptible(what):
    """Run what() until it returns, or a Ctrl-C or SIGTERM stops it: then None."""
    main = threading.current_thread() is threading.main_thread()  # signals: main thread only
    old = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    try:
        return what()
    except (KeyboardInterrupt, Stopped):
        return None
    finally:
        if main:
            signal.signal(signal.SIGTERM, old)


def require_board(folder):
    """Stop with one clear line when `folder` holds no virtual board."""
    if not (Path(folder) / "flash.bin").exists():
        raise SystemExit(
            "ias sim: no virtual board in %s (create one with `ias sim init`)" % folder
        )


def _write_run(folder, facts):
    (Path(folder) / "run.json").write_text(json.dumps(facts))


def boot(args):
    """Power on, then follow resets until N main-loop cycles, a halt, or too many boots."""
    folder = Path(args.dir)
    if not (folder / "flash.bin").exists():
        raise SystemExit(
            "ias sim boot: no virtual board in %s (run `ias sim init` first)" % folder
        )
    (folder / "cycles").write_text("0")
    code = interruptible(lambda: _boot(folder, args))
    if code is None:
        cut = stop_board(folder)
        print(
            "ias sim boot: stopped: the board in %s is off%s; `ias sim boot %s` powers it on"
            % (folder, " (%d cut writes dropped)" % len(cut) if cut else "", folder),
            file=sys.stderr,
        )
        return 130
    return code


def _boot(folder, args):
    cause, boots = "power_on", 0
    with open(folder / "console.log", "a") as log:
        while boots < args.max_boots:
            boots += 1
            facts = {"cause": cause, "boot": boots}
            if args.cycles is not None:
                facts["cycles_target"] = args.cycles
            if boots == 1 and args.hold_button:
                facts["hold_button"] = args.hold_button
            if args.power_cut_at is not None and boots == 1:
                facts["power_cut_at"] = args.power_cut_at
            _write_run(folder, facts)
            banner = "--- boot %d (%s) ---\n" % (boots, cause)
            log.write(banner)
            if not args.quiet:
                sys.stdout.write(banner)
            run = run_board(folder, echo=not args.quiet, timeout=args.boot_timeout, log=log)
            if run.code == EXIT_RESET:
                cause = "intended"
            elif run.code == EXIT_POWER_CUT:
                cause = "power_on"
            elif run.code == "watchdog":
                cause = "watchdog"
            elif run.code == EXIT_PANIC:
                cause = "crash"
            elif run.code == EXIT_NO_APP:
                print("the bootloader found no bootable app partition")
                return 1
            elif run.code == EXIT_HALT:
                return 0
            elif run.code == 0:
                print("main.py returned: the device sits at its REPL")
                return 0
            else:
                print(
                    "the device stopped at its REPL after an uncaught error (exit %s)" % run.code
                )
                return 1
    print("stopped after %d boots" % boots)
    return 0


def callhome(args):
    require_board(args.dir)
    _write_run(args.dir, {"cause": "power_on"})
    run = interruptible(lambda: run_board(args.dir, "callhome", echo=args.verbose))
    if run is None:
        stop_board(args.dir)
        print("ias sim callhome: stopped: the board in %s is off" % args.dir, file=sys.stderr)
        return 130
    res = run.result
    if res is None:
        if not args.verbose:
            sys.stdout.write(run.output)
        res = {"outcome": "error", "reason": "device_failed", "app": None}
    if args.json:
        print(json.dumps(res))
    else:
        line = res["outcome"]
        if res["outcome"] == "updated":
            line += " %s %s" % (res["app"]["name"], res["app"]["version"])
        elif res.get("reason"):
            line += " %s" % res["reason"]
        print(line)
    return 0 if res["outcome"] != "error" else 3


def port_free(host, port):
    """True when `port` on `host` can be bound now (the board's web server binds it next)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def config(args):
    require_board(args.dir)
    if not port_free(args.bind, args.port):
        raise SystemExit(
            "ias sim config: port %d on %s is busy (another program listens there): "
            "choose another with --port" % (args.port, args.bind)
        )
    _write_run(args.dir, {"cause": "power_on"})
    where = "%s:%d" % (args.bind, args.port)
    run = interruptible(
        lambda: run_board(args.dir, "config", where, echo=True, timeout=args.timeout + 60)
    )
    if run is None:
        stop_board(args.dir)
        print("ias sim config: stopped: the board in %s is off" % args.dir, file=sys.stderr)
        return 130
    return 0 if run.result else 1


def _read_out(args, what):
    require_board(args.dir)
    run = run_board(args.dir, what, args.path, echo=False)
    if run.code == 0:
        sys.stdout.write(run.output)
        return 0
    errno = (run.result or {}).get("errno")
    if errno == 21:
        why = "%s is a folder: list it with `ias sim ls %s %s`" % (args.path, args.dir, args.path)
    elif errno == 20:
        why = "%s is a file: print it with `ias sim cat %s %s`" % (args.path, args.dir, args.path)
    elif errno == 2:
        why = "no %s on the board's flash; see `ias sim ls %s`" % (args.path, args.dir)
    else:
        why = "reading %s failed (%s)" % (args.path, errno or run.output.strip()[-200:])
    raise SystemExit("ias sim %s: %s" % (what, why))


def ls(args):
    return _read_out(args, "ls")


def cat(args):
    return _read_out(args, "cat")


def add_parser(subparsers, summary):
    p = subparsers.add_parser(
        "sim",
        help=summary,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s = p.add_subparsers(dest="sim_command", metavar="ACTION")
    s.required = True

    i = s.add_parser(
        "init",
        help="create a virtual board and deploy firmware/ into its flash",
        description="Create a virtual board in DIR and deploy the firmware into its "
        "flash. Example: ias sim init sim/dev1 --server https://127.0.0.1:8443",
    )
    i.add_argument("dir", metavar="DIR")
    i.add_argument("--chip", choices=("esp32", "esp8266"), default="esp32")
    i.add_argument("--server", default="https://iotappstory.com", help="update server URL")
    i.add_argument(
        "--anchor",
        action="append",
        default=[],
        metavar="PEM",
        help="trust this root (repeatable); default: the anchors in firmware/cert/",
    )
    i.add_argument("--app-name", default="IASBlink")
    i.add_argument("--app-version", default="1.0")
    i.add_argument("--app", metavar="SRC_DIR", help="the app's folder (default examples/blink)")
    i.add_argument("--update-key", metavar="PUB", help="the operator's update public key (PEM)")
    i.add_argument(
        "--recovery",
        action="append",
        default=[],
        metavar="URL",
        help="a base URL serving signed anchor bundles (repeatable)",
    )
    i.add_argument("--channel", metavar="URL", help="URL of a signed static channel.json")
    i.add_argument("--interval", type=int, default=7200, help="seconds between call homes")
    i.add_argument("--mac", help="the board's MAC (default: derived from DIR)")
    i.add_argument("--no-wifi", action="store_true", help="no saved Wi-Fi network: config mode")
    i.add_argument("--flash-kib", type=int, default=2048, help="size of the flash filesystem")
    i.add_argument("--config-port", type=int, default=8080, help="port of config mode's web app")
    i.add_argument("--force", action="store_true", help="replace a board already in DIR")
    i.add_argument(
        "--romfs",
        action="store_true",
        help="run the client from a ROMFS image (DIR/romfs.img, mounted at /rom), not /lib",
    )
    i.set_defaults(func=init)

    b = s.add_parser(
        "boot",
        help="power on and run boot.py then main.py, across resets",
        description="Power on the virtual board and run it across resets until N "
        "main-loop cycles or a halt. Example: ias sim boot sim/dev1 --cycles 5",
    )
    b.add_argument("dir", metavar="DIR")
    b.add_argument(
        "--hold-button",
        type=float,
        default=0,
        metavar="SECONDS",
        help="hold the mode button this long at power-on (7 enters config mode)",
    )
    b.add_argument("--cycles", type=int, help="stop after this many main-loop cycles")
    b.add_argument("--max-boots", type=int, default=20)
    b.add_argument(
        "--boot-timeout",
        type=float,
        default=300,
        help="seconds before a silent boot counts as a watchdog reset",
    )
    b.add_argument(
        "--power-cut-at",
        type=int,
        metavar="OP",
        help="cut the power at this flash program/erase operation",
    )
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=boot)

    c = s.add_parser(
        "callhome",
        help="run one call-home cycle now (like a short button press)",
        description="Run one forced call-home cycle and print one line: up-to-date, "
        "updated NAME VERSION, no-update REASON or error REASON.",
    )
    c.add_argument("dir", metavar="DIR")
    c.add_argument("--json", action="store_true", help="print the outcome as JSON")
    c.add_argument("--verbose", action="store_true", help="show the device's console")
    c.set_defaults(func=callhome)

    g = s.add_parser(
        "config",
        help="serve the board's config mode on localhost",
        description="Serve the virtual board's config mode on 127.0.0.1 (--bind to change) "
        "until /close, Ctrl-C or 300 s without requests.",
    )
    g.add_argument("dir", metavar="DIR")
    g.add_argument("--port", type=int, default=8080)
    g.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every "
        "interface, e.g. to open the page from a phone)",
    )
    g.add_argument("--timeout", type=int, default=300)
    g.set_defaults(func=config)

    lsp = s.add_parser("ls", help="list the board's flash")
    lsp.add_argument("dir", metavar="DIR")
    lsp.add_argument("path", nargs="?", default="/")
    lsp.set_defaults(func=ls)

    ct = s.add_parser("cat", help="print a file from the board's flash")
    ct.add_argument("dir", metavar="DIR")
    ct.add_argument("path")
    ct.set_defaults(func=cat)


def args_for(action, folder, **options):
    """The arguments of `ias sim ACTION FOLDER` with the command line's own defaults, changed by
    `options`: how the demo and tests drive init() and boot() without repeating every default."""
    parser = argparse.ArgumentParser(prog="ias")
    add_parser(parser.add_subparsers(dest="command"), "")
    args = parser.parse_args(["sim", action, str(folder)])
    for name, value in options.items():
        if not hasattr(args, name):
            raise TypeError("ias sim %s has no option %s" % (action, name))
        setattr(args, name, value)
    return args


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="sim")
    add_parser(parser.add_subparsers(dest="command"), "virtual boards")
    args = parser.parse_args(["sim"] + sys.argv[1:])
    sys.exit(args.func(args) or 0)
