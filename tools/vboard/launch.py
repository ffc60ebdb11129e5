# The virtual board's "ROM": runs inside the MicroPython unix port. Mounts DIR/flash.bin (a
# littlefs image on the NOR model) at / and DIR at /host, runs the bootloader step for virtual
# ESP32 OTA slots, then /boot.py and /main.py as the device would.
#   micropython launch.py DIR [--run boot|callhome|config|ls PATH|cat PATH|tidy|format SRC]
# Exit codes: 0 done, 75 reset, 76 halt, 77 power cut, 78 panic (a crash reset), 79 no bootable
# app (the bootloader resets forever), 1 stuck at the REPL (uncaught error).
import json
import os
import sys

import simentry
import vfs
from nor import BLOCK, NorFlash, PowerCut

EXIT_POWER_CUT = 77
EXIT_PANIC = 78
EXIT_NO_APP = 79
EXIT_NO_FILE = 2  # ls or cat of a path that is not on the flash
# A virtual firmware image whose app segment carries this marker stands for firmware that
# panics at start (tools/espimage.py app_image(payload=...)): the bootloader starts it, it
# resets with a crash before any Python runs, as a broken firmware build does on a chip.
PANIC_MARK = b"IAS-VBOARD-PANIC"


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return {}


# DIR/romfs.img: the client as a ROMFS image (`ias sim init --romfs`), mounted at /rom as a
# board with a ROMFS partition mounts it, /rom/lib ahead of /lib on sys.path.
ROMFS_IMAGE = "/romfs.img"


def read_rom(host):
    # A chip maps its ROMFS partition into the address space; the unix port can only hold the
    # image in a bytes object, so here its bytes sit in the heap (the bench counts them apart).
    # Read first, before the host's root is unmounted and while the heap is empty.
    try:
        with open(host + ROMFS_IMAGE, "rb") as f:
            return f.read()
    except OSError:
        return None


def mount_flash(host, fresh=False):
    rom = None if fresh else read_rom(host)
    run = _load(host + "/run.json")
    size = os.stat(host + "/flash.bin")[6]
    dev = NorFlash(size // BLOCK, path=host + "/flash.bin", cut_at=run.get("power_cut_at"))
    if fresh:
        vfs.VfsLfs2.mkfs(dev)
    vfs.umount("/")
    vfs.mount(vfs.VfsLfs2(dev), "/")
    vfs.mount(vfs.VfsPosix(host), "/host")
    os.chdir("/")
    sys.path[:] = ["", "/lib", ".frozen"]
    if rom is not None:
        vfs.mount(vfs.VfsRom(rom), "/rom")
        sys.path[1:1] = ["/rom", "/rom/lib"]
    return dev


def copy_tree(src, dst):
    """Copy a host folder (under /host) into the flash, creating folders."""
    for entry in os.ilistdir(src):
        name, kind = entry[0], entry[1]
        s, d = src + "/" + name, (dst.rstrip("/") + "/" + name)
        if kind == 0x4000:
            try:
                os.mkdir(d)
            except OSError:
                pass
            copy_tree(s, d)
        else:
            buf = bytearray(BLOCK)
            with open(s, "rb") as fi, open(d, "wb") as fo:
                while True:
                    n = fi.readinto(buf)
                    if not n:
                        break
                    fo.write(memoryview(buf)[:n])


def list_tree(path, depth=0):
    for entry in sorted(os.ilistdir(path)):
        name, kind = entry[0], entry[1]
        full = path.rstrip("/") + "/" + name
        if full == "/host":
            continue
        if kind == 0x4000:
            print("%s%s/" % ("  " * depth, name))
            list_tree(full, depth + 1)
        else:
            print("%s%s  %d" % ("  " * depth, name, os.stat(full)[6]))


def read_out(mode, path):
    # ls and cat for the host: a path that is not there is one result line, not a traceback.
    try:
        if mode == "ls":
            list_tree(path)
        else:
            with open(path, "rb") as f:
                sys.stdout.buffer.write(f.read())
    except OSError as e:
        print("@@RESULT " + json.dumps({"errno": e.args[0] if e.args else None}))
        sys.exit(EXIT_NO_FILE)


def tidy(path):
    # After the host stopped a board (Ctrl-C cuts its power): drop the temp files of writes the
    # cut interrupted, as certstore.recover() does for /cert. Their targets kept the old content.
    for entry in os.ilistdir(path):
        name, kind = entry[0], entry[1]
        full = path.rstrip("/") + "/" + name
        if full == "/host":
            continue
        if kind == 0x4000:
            tidy(full)
        elif name.endswith(".tmp"):
            os.remove(full)
            print(full)


def run_file(path, env):
    with open(path) as f:
        code = f.read()
    env["__file__"] = path
    exec(compile(code, path, "exec"), env)


# One-shot, from the host: "N" cuts at otadata flash op N, the op landing torn (half of it);
# "N clean" cuts before op N lands at all.
OTADATA_CUT = "/host/otadata_cut_at"


class _OtadataFlash(NorFlash):
    """otadata.bin as flash that counts and cuts its ops (nor.py); it sits on the same chip as
    flash.bin, so a cut here is the power going for both."""

    def __init__(self, flash, cut_at, torn):
        NorFlash.__init__(self, 2, path="/host/otadata.bin", cut_at=cut_at, torn=torn)
        self.flash = flash

    def writeblocks(self, block, buf, offset=None):
        try:
            NorFlash.writeblocks(self, block, buf, offset)
        except PowerCut:
            self.flash.dead = True
            raise

    def ioctl(self, op, arg):
        try:
            return NorFlash.ioctl(self, op, arg)
        except PowerCut:
            self.flash.dead = True
            raise


def arm_otadata_cut(flash):
    try:
        with open(OTADATA_CUT) as f:
            words = f.read().split()
        n = int(words[0])
    except (OSError, ValueError, IndexError):
        return
    os.remove(OTADATA_CUT)  # this power-on only
    from ias import vpartition

    dev = _OtadataFlash(flash, n, "clean" not in words)
    vpartition.use_otadata_device("/host", dev)


def _panics(image_path):
    buf = bytearray(BLOCK)
    with open(image_path, "rb") as f:
        n = f.readinto(buf)
    return PANIC_MARK in bytes(memoryview(buf)[:n])


def esp32_bootloader():
    from ias import vpartition  # the ESP32 bootloader's choice of app slot

    slot = vpartition.bootloader_select("/host")["slot"]
    if slot is None:  # the chip would reset and try again forever
        sys.exit(EXIT_NO_APP)
    if _panics("/host/" + slot + ".bin"):
        print("Guru Meditation Error: Core  0 panic'ed (virtual firmware in %s)" % slot)
        sys.exit(EXIT_PANIC)


def boot(flash):
    if _load("/host/board.json").get("chip", "esp32") == "esp32":
        arm_otadata_cut(flash)
        esp32_bootloader()
    env = {"__name__": "__main__"}  # as the ESP ports: boot.py and main.py share one namespace
    try:
        run_file("/boot.py", env)
    except SystemExit:
        raise
    except PowerCut:
        raise
    except Exception as e:  # as on the device: boot.py errors are printed, main.py still runs
        sys.print_exception(e)
    run_file("/main.py", env)


def main(argv):
    host_dir = argv[1]
    mode = argv[3] if len(argv) > 3 and argv[2] == "--run" else "boot"
    arg = argv[4] if len(argv) > 4 else None
    # Mount the host folder first under its own name, so the flash image can be found.
    dev = mount_flash(host_dir, fresh=(mode == "format"))
    try:
        if mode == "format":
            copy_tree("/host/" + arg, "/")
        elif mode in ("ls", "cat"):
            read_out(mode, arg or "/")
        elif mode == "tidy":
            tidy("/")
        elif mode == "boot":
            boot(dev)
        else:
            simentry.run(mode, arg)
    except PowerCut:
        print("[board] power cut")
        sys.exit(EXIT_POWER_CUT)
    finally:
        record_flash_ops(mode, dev)


def record_flash_ops(mode, dev):
    # One JSON line per power-on in DIR/flash_ops.jsonl: what this run cost the flash, so the
    # host can tell a run that wrote nothing (e.g. a 304 poll) from one that did.
    run = _load("/host/run.json")
    line = json.dumps(
        {"mode": mode, "boot": run.get("boot"), "programs": dev.programs, "erases": dev.erases}
    )
    with open("/host/flash_ops.jsonl", "a") as f:  # the host folder, not the flash
        f.write(line + "\n")


main(sys.argv)
