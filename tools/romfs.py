"""The client as a ROMFS image: its bytecode runs in place from flash instead of being loaded
into the heap (docs/deployments.md).

The image holds what a filesystem deployment puts in /lib, compiled with mpy-cross for the chip:
`lib/ias/*.mpy` and `lib/microdot/*.mpy`. A board mounts it at /rom, with /rom/lib on sys.path;
a deploy removes any /lib copy so none can shadow it. /boot.py, /main.py, /www, the anchors,
keys and settings stay on the filesystem (they are data, or are written at run time). Built
and written with mpremote's own ROMFS support (`mpremote romfs build` / `mpremote romfs
deploy`).
"""

import os
import shutil
import subprocess
import sys
import tempfile

from tools import deploy, mplib

# Device paths the image carries: a ROMFS deployment leaves these out of the filesystem.
IMAGE_PREFIXES = ("/lib/%s/" % deploy.PACKAGE, "/lib/microdot/")
# ESP32 partition table with a ROMFS partition beside the two OTA slots (docs/deployments.md).
ESP32_PARTITIONS = os.path.join(deploy.ROOT, "tools", "partitions-4MiB-ota-romfs.csv")


# Run on the board: remove a filesystem copy of what the image carries (from an earlier `.mpy`
# deployment), so nothing in /lib can shadow /rom/lib whatever the port's sys.path order.
_REMOVE_CODE = """
import os
def _rm(p):
    try:
        st = os.stat(p)
    except OSError:
        return 0
    n = 0
    if st[0] & 0x4000:
        for e in os.ilistdir(p):
            n += _rm(p + '/' + e[0])
        os.rmdir(p)
    else:
        os.remove(p)
        n = 1
    return n
print(sum(_rm(p.rstrip('/')) for p in %r))
"""


def remove_filesystem_copy(board):
    """Delete /lib/ias and /lib/microdot from the board's filesystem (tools.repl.Board);
    returns how many files went."""
    return int(board.exec(_REMOVE_CODE % (list(IMAGE_PREFIXES),)).strip() or 0)


def mpremote():
    exe = os.path.join(deploy.BIN, "mpremote")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "mpremote"]


def stage(out_dir, target="esp32", build_time=None):
    """The image's tree under out_dir: lib/ias/*.mpy (BUILD_TIME set as for any deploy) and
    lib/microdot/*.mpy. Returns the image paths written."""
    with tempfile.TemporaryDirectory(prefix="ias-romfs-") as tmp:
        deploy.compile_firmware(tmp, build_time=build_time, target=target)
        os.makedirs(os.path.join(out_dir, "lib"), exist_ok=True)
        shutil.copytree(
            os.path.join(tmp, "lib", deploy.PACKAGE),
            os.path.join(out_dir, "lib", deploy.PACKAGE),
            dirs_exist_ok=True,
        )
    mplib.stage_libs(os.path.join(out_dir, "lib"), mpy=True, march=deploy.MARCH.get(target))
    written = []
    for dirpath, _dirs, files in os.walk(out_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), out_dir)
            written.append("/" + rel.replace(os.sep, "/"))
    return sorted(written)


def build(image_path, target="esp32", build_time=None):
    """Build the client's ROMFS image at image_path with `mpremote romfs build`; returns its
    size in bytes. The tree is compiled already, so mpremote copies the .mpy files as they are."""
    with tempfile.TemporaryDirectory(prefix="ias-romfs-") as tmp:
        tree = os.path.join(tmp, "image")
        stage(tree, target=target, build_time=build_time)
        cmd = mpremote() + ["romfs", "--no-mpy", "--output", image_path, "build", tree]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(image_path):
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise deploy.BuildError(
                "mpremote romfs build failed: %s" % (msg[-1] if msg else proc.returncode)
            )
    return os.path.getsize(image_path)


def write_to_board(port, image_path, stream=None):
    """Write the image into the board's ROMFS partition with `mpremote romfs deploy`."""
    cmd = mpremote() + ["connect", port, "romfs", "deploy", image_path]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if stream is not None:
        stream.write(proc.stdout)
    if proc.returncode != 0 or "ROMFS is not enabled" in proc.stdout + proc.stderr:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise deploy.BuildError(
            "mpremote romfs deploy failed on %s: %s (the firmware needs ROMFS: ESP8266_GENERIC "
            "FLASH_2M_ROMFS, or an ESP32 build with a romfs partition)"
            % (port, lines[-1] if lines else proc.returncode)
        )


def reset_board(port):
    """Hard-reset the board so it mounts the new image at /rom and boots."""
    subprocess.run(mpremote() + ["connect", port, "reset"], capture_output=True, text=True)
