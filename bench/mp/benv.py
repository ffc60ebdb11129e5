# Shared by the bench's MicroPython scripts: mount a flash image on the NOR model at "/" (as the
# device and the virtual board do), the bench work folder at /host, and print results as JSON.
import gc
import json
import os
import sys

import vfs


def read_rom():
    """The ROMFS deployment: IAS_BENCH_ROMFS names the client's ROMFS image (a host path). The
    unix port can hold it only as a bytes object in the heap (a chip maps it from flash), so it
    is read first, into the empty heap, and its cost is reported to be counted apart."""
    path = os.getenv("IAS_BENCH_ROMFS")
    if not path:
        return None
    gc.collect()
    before = gc.mem_alloc()
    with open(path, "rb") as f:
        data = f.read()
    gc.collect()
    emit(kind="romfs", image_bytes=len(data), heap_bytes=gc.mem_alloc() - before)
    return data


def mount(host, image):
    """NOR flash (tools/vboard/nor.py, counting program and erase ops) from `image` at /, and
    the host folder `host` at /host; imports then come from /host/fw/lib and /host/mp, or from
    the ROMFS image at /rom/lib (read_rom)."""
    rom = read_rom()
    from nor import BLOCK, NorFlash

    dev = NorFlash(os.stat(image)[6] // BLOCK, path=image)
    vfs.umount("/")
    vfs.mount(vfs.VfsLfs2(dev), "/")
    vfs.mount(vfs.VfsPosix(host), "/host")
    os.chdir("/")
    sys.path[:] = ["/host/fw/lib", "/host/mp", ".frozen"]
    if rom is not None:
        vfs.mount(vfs.VfsRom(rom), "/rom")
        sys.path[0] = "/rom/lib"
    return dev


def emit(**rec):
    print("@@ " + json.dumps(rec))
