# Boot overhead on a virtual board's flash (made by `ias sim init`, firmware as .mpy in /lib):
# "client": /boot.py (bootflow.run: reset cause, state, trial check, button) then what main.py
# does up to the app's start (Device.open(), start_app(): app_api, slots, import and setup() of
# the app), the network join left out. "bare": an empty boot.py and a main.py that imports the
# app directly. "mods": the heap after importing each module named on the command line alone.
#   micropython -m boottime HOST_DIR client|bare|mods [MODULE...]
import gc
import sys
import time

gc.collect()
heap0 = gc.mem_alloc()
t_start = time.ticks_us()
import os  # noqa: E402

import vfs  # noqa: E402
from nor import BLOCK, NorFlash  # noqa: E402

host, mode = sys.argv[1], sys.argv[2]
mods = sys.argv[3:]
dev = NorFlash(os.stat(host + "/flash.bin")[6] // BLOCK, path=host + "/flash.bin")
vfs.umount("/")
vfs.mount(vfs.VfsLfs2(dev), "/")
vfs.mount(vfs.VfsPosix(host), "/host")
os.chdir("/")
sys.path[:] = ["", "/lib", ".frozen"]
gc.collect()
heap_mounted = gc.mem_alloc()


def emit(**rec):
    import json

    print("@@ " + json.dumps(rec))


def run_file(path, env):
    with open(path) as f:
        code = f.read()
    exec(compile(code, path, "exec"), env)


if mode == "client":
    t0 = time.ticks_us()
    env = {"__name__": "__main__"}  # boot.py and main.py share one namespace, as on the ESP ports
    run_file("/boot.py", env)
    t1 = time.ticks_us()
    from ias import device  # noqa: E402

    d = device.Device.open(env.get("boot_decision"))
    d.start_app()
    t2 = time.ticks_us()
    assert d.app.module is not None, "the app did not start"
    gc.collect()
    emit(
        kind="boot",
        boot_us=time.ticks_diff(t1, t0),
        total_us=time.ticks_diff(t2, t0),
        heap_mounted=heap_mounted,
        heap_after=gc.mem_alloc(),
        programs=dev.programs,
        erases=dev.erases,
        modules=sorted(k for k in sys.modules),
    )
elif mode == "bare":
    t0 = time.ticks_us()
    sys.path.insert(0, "/slot_a")
    import app  # noqa: E402, F401

    t2 = time.ticks_us()
    gc.collect()
    emit(
        kind="boot",
        total_us=time.ticks_diff(t2, t0),
        heap_mounted=heap_mounted,
        heap_after=gc.mem_alloc(),
    )
else:
    for name in mods:
        __import__("ias." + name)  # the client's modules live in the package ias
    gc.collect()
    emit(kind="mods", mods=mods, heap_mounted=heap_mounted, heap_after=gc.mem_alloc())
print("OK")
