# Shared by the bench's MicroPython scripts: mount a flash image on the NOR model at "/" (as the
# device and the virtual board do), the bench work folder at /host, and print results as JSON.
import json
import os
import sys

import vfs


def mount(host, image):
    """NOR flash (tools/vboard/nor.py, counting program and erase ops) from `image` at /, and
    the host folder `host` at /host; imports then come from /host/fw/lib and /host/mp."""
    from nor import BLOCK, NorFlash

    dev = NorFlash(os.stat(image)[6] // BLOCK, path=image)
    vfs.umount("/")
    vfs.mount(vfs.VfsLfs2(dev), "/")
    vfs.mount(vfs.VfsPosix(host), "/host")
    os.chdir("/")
    sys.path[:] = ["/host/fw/lib", "/host/mp", ".frozen"]
    return dev


def emit(**rec):
    print("@@ " + json.dumps(rec))
