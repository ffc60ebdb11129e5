# Child process for the heap measurements: install FIX/NAME.tar onto littlefs on a file-backed
# flash, printing "HEAP base=<bytes> peak=<bytes>" (live heap after collection, sampled at
# flash operations) and "OK". Run as: micropython [-X heapsize=N] ota_heaprun.py FIX NAME
import gc
import os
import sys

import ota_fixtures as fx
import vfs
from ias import slots as slots_mod
from ias import state as state_mod
from ota_fixtures import Ctx, FakeBoard


def run(fix, name, root="/hp"):
    peak = [0]

    def probe():
        gc.collect()
        used = gc.mem_alloc()
        if used > peak[0]:
            peak[0] = used

    dev = fx.FileFlash("%s/flash-%s.bin" % (fix, name), 640)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), root)
    try:
        fx.copy_keys(fix, ("update",), root)
        ctx = Ctx(FakeBoard(), state_mod.State(root + "/state.json"), slots_mod.Slots(root))
        gc.collect()
        base = gc.mem_alloc()
        dev.probe = probe
        fx.install(ctx, "%s/%s.tar" % (fix, name), chunk=1024)
        dev.probe = None
        folder = ctx.slots.active_app_dir()
        names = [e[0] for e in os.ilistdir(folder)] + [e[0] for e in os.ilistdir(folder + "/data")]
        assert len(names) == 6, names  # app.py, data/ and its four parts
    finally:
        vfs.umount(root)
        dev.close()
    return base, peak[0], dev.ops


if __name__ == "__main__":
    base, peak, ops = run(sys.argv[1], sys.argv[2])
    print("HEAP base=%d peak=%d ops=%d" % (base, peak, ops))
    print("OK")
