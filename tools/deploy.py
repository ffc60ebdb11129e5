"""`ias deploy`: compile firmware/ with mpy-cross and copy it to a board with mpremote.

The build, which other tools reuse: `compile_firmware()` writes the device tree (boot.py and
main.py as source, every other module as .mpy under lib/ias/), and `stage_tree()` adds Microdot,
the CA anchors, the update key and an initial settings file, laid out exactly as on the device:
/boot.py, /main.py, /lib/ias/*.mpy, /lib/microdot/*.mpy, /www/..., /cert/*.cer,
/keys/update.pub, /settings.json. `deploy_to()` stages such a tree and hands it to tools/repl.py
(the raw REPL transport), which copies what differs and verifies every file afterwards.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
PACKAGE = "ias"  # every firmware module but boot.py and main.py deploys as /lib/ias/NAME.mpy
BIN = os.path.join(ROOT, ".venv", "bin")

# Run as source so a broken app or compile never bricks the boot path (design: boot stays simple).
SOURCE_FILES = ("boot.py", "main.py")
# Only the virtual board needs these; real hardware has real partitions.
HOST_ONLY = ("board_unix.py", "vpartition.py")
# Each chip's board module is useless on the other chip: save its flash.
CHIP_ONLY = {"board_esp32.py": "esp32", "board_esp8266.py": "esp8266"}
# mpy-cross -march: bytecode is portable, but the header records the arch for native code.
MARCH = {"esp32": "xtensawin", "esp8266": "xtensa"}
TARGETS = ("esp32", "esp8266", "unix")
# Folders of firmware/ copied verbatim (static files of the config web app).
ASSET_DIRS = ("www",)

_BUILD_TIME_LINE = re.compile(r"^BUILD_TIME\s*=.*$", re.M)


class BuildError(Exception):
    pass


def mpy_cross_path():
    exe = os.path.join(BIN, "mpy-cross")
    if os.path.exists(exe):
        return exe
    found = shutil.which("mpy-cross")
    if found:
        return found
    raise BuildError("mpy-cross not found: run `make setup` (it is installed into .venv)")


def firmware_modules(target="unix", src=FIRMWARE):
    """The top-level .py files of firmware/ that ship to `target`, sorted."""
    if target not in TARGETS:
        raise BuildError("unknown target %r (one of %s)" % (target, ", ".join(TARGETS)))
    names = []
    for name in sorted(os.listdir(src)):
        if not name.endswith(".py"):
            continue
        if target != "unix" and name in HOST_ONLY:
            continue
        if target != "unix" and CHIP_ONLY.get(name, target) != target:
            continue
        names.append(name)
    return names


def set_build_time(source, build_time):
    """board.py's text with its BUILD_TIME line set to `build_time` (Unix seconds)."""
    new, n = _BUILD_TIME_LINE.subn("BUILD_TIME = %d" % int(build_time), source, count=1)
    if n != 1:
        raise BuildError("firmware/board.py has no `BUILD_TIME = ...` line to set")
    return new


def _compile(src_path, out_path, name, target, exe):
    cmd = [exe, "-o", out_path, "-s", name]
    if target in MARCH:
        cmd.append("-march=" + MARCH[target])
    cmd.append(src_path)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip()
        raise BuildError("mpy-cross failed on firmware/%s:\n%s" % (name, msg))


def compile_firmware(out_dir, build_time=None, target="unix", src=FIRMWARE, check_sources=True):
    """Compile firmware/ into `out_dir` in device layout; returns the device paths written.

    boot.py and main.py are copied as source (after a compile check when `check_sources`);
    every other module becomes lib/NAME.mpy. board.py's BUILD_TIME is set to `build_time`
    (default: now) so the device refuses clocks earlier than its own build.
    """
    exe = mpy_cross_path()
    if build_time is None:
        build_time = int(time.time())
    lib = os.path.join(out_dir, "lib", PACKAGE)  # the client is the package `ias` in /lib
    os.makedirs(lib, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="ias-build-") as tmp:
        for name in firmware_modules(target, src):
            path = os.path.join(src, name)
            if name == "board.py":
                with open(path) as f:
                    text = set_build_time(f.read(), build_time)
                path = os.path.join(tmp, name)
                with open(path, "w") as f:
                    f.write(text)
            if name in SOURCE_FILES:
                if check_sources:
                    _compile(path, os.path.join(tmp, name + ".mpy"), name, target, exe)
                shutil.copyfile(path, os.path.join(out_dir, name))
                written.append("/" + name)
            else:
                mpy = name[:-3] + ".mpy"
                _compile(path, os.path.join(lib, mpy), name, target, exe)
                written.append("/lib/%s/%s" % (PACKAGE, mpy))
    for folder in ASSET_DIRS:
        base = os.path.join(src, folder)
        if not os.path.isdir(base):
            continue
        for dirpath, _dirs, files in os.walk(base):
            rel = os.path.relpath(dirpath, src)
            os.makedirs(os.path.join(out_dir, rel), exist_ok=True)
            for name in sorted(files):
                shutil.copyfile(os.path.join(dirpath, name), os.path.join(out_dir, rel, name))
                written.append("/" + os.path.join(rel, name).replace(os.sep, "/"))
    return written


def source_time(src=FIRMWARE):
    """The build time of a deploy: SOURCE_DATE_EPOCH when set, else the newest source's mtime.

    Deterministic, so redeploying unchanged firmware produces the same board.mpy and copies
    nothing; still never later than now, so it stays a valid floor for the device's clock."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    newest = 0
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            newest = max(newest, os.path.getmtime(os.path.join(dirpath, name)))
    return int(newest) or int(time.time())


def check_compile(target="unix"):
    """Compile every module (boot.py and main.py too) into a throwaway dir; raise on failure."""
    with tempfile.TemporaryDirectory(prefix="ias-check-") as tmp:
        return compile_firmware(tmp, target=target)


def _main_check(argv):
    parser = argparse.ArgumentParser(prog="python -m tools.deploy --check-compile")
    parser.add_argument("--check-compile", action="store_true")
    parser.add_argument("--target", choices=TARGETS, default=None)
    args = parser.parse_args(argv)
    targets = [args.target] if args.target else list(TARGETS)
    try:
        for target in targets:
            files = check_compile(target)
            print("mpy-cross ok (%s): %d files" % (target, len(files)))
    except BuildError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


# ---- the whole device tree ----------------------------------------------------------------

ANCHORS = os.path.join(FIRMWARE, "cert")


def _stage_microdot(lib_dir, target):
    """Microdot's package files as .mpy under lib_dir/microdot/; returns their device paths."""
    try:
        from tools import mplib
    except ImportError:
        mplib = None
    if mplib is not None:
        rels = mplib.stage_libs(lib_dir, mpy=True, march=MARCH.get(target))
        return ["/lib/" + r.replace(os.sep, "/") for r in rels]
    import microdot  # fallback: the core package files Microdot needs on MicroPython

    src = os.path.dirname(microdot.__file__)
    out = os.path.join(lib_dir, "microdot")
    os.makedirs(out, exist_ok=True)
    written = []
    exe = mpy_cross_path()
    for name in ("__init__.py", "microdot.py", "multipart.py", "helpers.py"):
        _compile(os.path.join(src, name), os.path.join(out, name[:-3] + ".mpy"), name, target, exe)
        written.append("/lib/microdot/" + name[:-3] + ".mpy")
    return written


def check_anchor(path):
    """Raise BuildError unless `path` holds one X.509 certificate (PEM or DER)."""
    from cryptography import x509

    with open(path, "rb") as f:
        data = f.read()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            x509.load_pem_x509_certificate(data)
        else:
            x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise BuildError("%s is not a certificate: %s" % (path, e))


def check_update_key(path):
    """Raise BuildError unless `path` is a PEM public key (a private key never leaves the host)."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BuildError("cannot read the update key %s: %s" % (path, e.strerror or e))
    if b"PRIVATE KEY" in data:
        raise BuildError("%s is a PRIVATE key: pass the public half (.pub)" % path)
    try:
        load_pem_public_key(data)
    except ValueError as e:
        raise BuildError("%s is not a PEM public key: %s" % (path, e))


def load_settings(path):
    """The settings file's content, checked by firmware/settings.py's own validate()."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise BuildError("cannot read settings %s: %s" % (path, e))
    validate = _firmware_validate()
    if validate is not None:
        try:
            data = validate(data)
        except ValueError as e:
            raise BuildError("settings %s: %s" % (path, e))
    return data


def _firmware_validate():
    # settings.py runs on CPython too; import it without leaving firmware modules behind.
    import importlib

    from tools import pkg_path

    saved = dict(sys.modules)
    where = pkg_path()
    sys.path.insert(0, where)
    try:
        return importlib.import_module(PACKAGE + ".settings").validate
    except ImportError:
        return None
    finally:
        sys.path.remove(where)
        for name in list(sys.modules):
            if name not in saved:
                del sys.modules[name]
        sys.modules.update(saved)


def stage_tree(
    out_dir,
    target="esp32",
    settings=None,
    update_key=None,
    anchors=ANCHORS,
    build_time=None,
    app=None,
):
    """Everything `ias deploy` puts on a board, in device layout under `out_dir`.

    Returns {device path: local file}. `settings` is a JSON file (validated), `update_key` a PEM
    public key, `anchors` a folder of *.cer certificates (PEM or DER), `app` an app folder to
    install as the factory app in /slot_a (its MD5 recorded as settings app_md5)."""
    if app and not settings:
        raise BuildError("--app needs --settings (its app_name/app_version name the app)")
    files = compile_firmware(out_dir, build_time=build_time, target=target)
    files += _stage_microdot(os.path.join(out_dir, "lib"), target)
    if anchors:
        names = sorted(n for n in os.listdir(anchors) if n.endswith(".cer"))
        if not names:
            raise BuildError("no *.cer anchors in %s" % anchors)
        os.makedirs(os.path.join(out_dir, "cert"), exist_ok=True)
        for name in names:
            check_anchor(os.path.join(anchors, name))
            shutil.copyfile(os.path.join(anchors, name), os.path.join(out_dir, "cert", name))
            files.append("/cert/" + name)
    if update_key:
        check_update_key(update_key)
        os.makedirs(os.path.join(out_dir, "keys"), exist_ok=True)
        shutil.copyfile(update_key, os.path.join(out_dir, "keys", "update.pub"))
        files.append("/keys/update.pub")
    if app:
        files += _stage_factory_app(out_dir, app)
    if settings:
        data = load_settings(settings)
        if app:
            from tools import bundle

            data["app_md5"] = bundle.app_md5(app)  # reported in x-ESP-SKETCH-MD5 (callhome.md)
        with open(os.path.join(out_dir, "settings.json"), "w") as f:
            json.dump(data, f, separators=(",", ":"))
        files.append("/settings.json")
    return {p: os.path.join(out_dir, *p.strip("/").split("/")) for p in files}


def _stage_factory_app(out_dir, app):
    """The app's files in /slot_a and a pointer that names the factory app (settings do)."""
    from tools import bundle

    try:
        entries = bundle.collect(app)
    except (OSError, ValueError) as e:
        raise BuildError("app %s: %s" % (app, e))
    written = []
    for name, path in entries:
        dest = os.path.join(out_dir, "slot_a", *name.split("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(path, dest)
        written.append("/slot_a/" + name)
    with open(os.path.join(out_dir, "app.json"), "w") as f:
        json.dump({"active": "slot_a", "kind": "factory"}, f)
    return written + ["/app.json"]


# The client needs the `tls` module, WLAN.IF_STA and the SEC_* constants: MicroPython 1.23.
MIN_VERSION = (1, 23)


def check_version(version):
    """Refuse a board whose MicroPython is older than MIN_VERSION, in one line."""
    if tuple(version[:2]) < MIN_VERSION:
        have = ".".join(str(v) for v in version) or "unknown"
        raise BuildError(
            "the board runs MicroPython %s; the client needs %d.%d or newer (see `ias flash`)"
            % ((have,) + MIN_VERSION)
        )


def target_for(platform):
    return {"esp32": "esp32", "esp8266": "esp8266"}.get(platform, "unix")


def deploy_to(
    port,
    connect_timeout=None,
    settings=None,
    update_key=None,
    anchors=ANCHORS,
    target=None,
    reset=True,
    stream=None,
    build_time=None,
    app=None,
    romfs=False,
):
    """Build the device tree for the board on `port` and sync it. Returns sync()'s report.

    With `romfs`, the client and Microdot go into a ROMFS image (tools/romfs.py) written to the
    board's ROMFS partition after the other files; they are left out of the filesystem."""
    from tools.repl import Board, sync

    out = stream if stream is not None else sys.stderr
    # What can be checked on the host is checked before the board is touched.
    from tools.repl import CONNECT_TIMEOUT, check_port

    if update_key:
        check_update_key(update_key)
    if settings:
        load_settings(settings)
    check_port(port)
    wait = connect_timeout or CONNECT_TIMEOUT
    print("connecting to %s (up to %g s) ..." % (port, wait), file=out, flush=True)
    board = Board(port, timeout=wait)
    try:
        version = board.version()
        check_version(version)
        if target is None:
            target = target_for(board.platform())
        print(
            "MicroPython %s on %s; building the client for it ..."
            % (".".join(str(v) for v in version) or "?", target),
            file=out,
            flush=True,
        )
        if build_time is None:
            build_time = source_time()
        with tempfile.TemporaryDirectory(prefix="ias-deploy-") as tmp:
            tree = stage_tree(tmp, target, settings, update_key, anchors, build_time, app)
            if romfs:
                from tools import romfs as romfs_mod

                image = os.path.join(tmp, "ias-client.romfs")
                size = romfs_mod.build(image, target=target, build_time=build_time)
                tree = {
                    p: f for p, f in tree.items() if not p.startswith(romfs_mod.IMAGE_PREFIXES)
                }
            report = sync(board, tree, stream=out)
            if romfs:  # mpremote opens the port itself: hand it over, then reset as usual
                report["removed"] = romfs_mod.remove_filesystem_copy(board)
                board.close(reset=False)
                board = None
                romfs_mod.write_to_board(port, image, stream=out)
                report["romfs_bytes"] = size
                if reset:
                    romfs_mod.reset_board(port)
        report["target"] = target
    finally:
        if board is not None:
            board.close(reset=reset)
    print(
        "deployed to %s (%s): %d copied (%d bytes), %d unchanged, all %d verified"
        % (
            port,
            target,
            len(report["copied"]),
            report["bytes"],
            len(report["skipped"]),
            len(report["copied"]) + len(report["skipped"]),
        ),
        file=out,
    )
    return report


# ---- command line -------------------------------------------------------------------------

DESCRIPTION = """\
Compile firmware/ with mpy-cross and copy it to a MicroPython board on a serial port:
/boot.py and /main.py as source, every other module and Microdot as .mpy in /lib, the CA
anchors in /cert, the update-signing public key in /keys/update.pub and, when given, a
settings file as /settings.json. Files whose SHA-256 already matches on the board are skipped;
every file is hashed again on the board afterwards. The board needs MicroPython already
(see `ias flash`)."""

EPILOG = """\
examples:
  ias deploy --port /dev/ttyUSB0
  ias deploy --port /dev/ttyUSB0 --settings my-settings.json --update-key keys/update.pub
  ias deploy --port /dev/ttyUSB0 --romfs     (the client as a ROMFS image, run from flash)
  python -m tools.deploy --check-compile     (only compile, as `make mpy` does)"""


def add_arguments(parser):
    parser.add_argument(
        "--connect-timeout",
        type=float,
        metavar="S",
        help="seconds for the board to answer on its port (default 10)",
    )
    parser.add_argument("--settings", metavar="FILE", help="initial settings (JSON) to install")
    parser.add_argument(
        "--app",
        metavar="DIR",
        help="app folder to install as the factory app in /slot_a (needs --settings)",
    )
    parser.add_argument(
        "--update-key", metavar="PUB", help="update-signing PUBLIC key (PEM), see `ias keys`"
    )
    parser.add_argument(
        "--anchors",
        metavar="DIR",
        default=ANCHORS,
        help="folder of CA anchors *.cer to install in /cert (default: firmware/cert)",
    )
    parser.add_argument(
        "--chip",
        choices=("auto",) + TARGETS,
        default="auto",
        help="compile for this port (default: ask the board)",
    )
    parser.add_argument(
        "--no-reset", action="store_true", help="leave the board in the REPL afterwards"
    )
    parser.add_argument(
        "--romfs",
        action="store_true",
        help="put the client and Microdot in a ROMFS image (mpremote romfs build/deploy) "
        "instead of /lib: the firmware needs a ROMFS partition (docs/deployments.md)",
    )


def add_parser(subparsers, summary):
    parser = subparsers.add_parser(
        "deploy",
        help=summary,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0 or COM4")
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args):
    from tools.repl import DeployError

    try:
        deploy_to(
            args.port,
            connect_timeout=args.connect_timeout,
            settings=args.settings,
            update_key=args.update_key,
            anchors=args.anchors,
            app=args.app,
            target=None if args.chip == "auto" else args.chip,
            reset=not args.no_reset,
            romfs=args.romfs,
        )
    except (BuildError, DeployError) as e:
        print("ias deploy: error: %s" % e, file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--check-compile" in argv:
        return _main_check(argv)
    parser = argparse.ArgumentParser(
        prog="python tools/deploy.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0 or COM4")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    if __package__ in (None, ""):  # run as `python tools/deploy.py`
        sys.path.insert(0, ROOT)
    sys.exit(main())
