# Our client, one complete call home plus install, as the device runs it: the Device built by
# Device.open() over a VirtualBoard (settings from /settings.json, State, CertStore on /cert),
# then Device.call_home() (verified TLS, x-MD5, SHA-256, signature, unpack into the
# inactive slot) and the installer's activate() (the slot switch). The flash is littlefs on the
# NOR model mounted at /.
#   micropython [-X heapsize=N] -m client HOST IMAGE BOARD_DIR MODE [REPEAT]
# MODE "update": one call home that must install; "timed": the same with the phases timed (a thin
# wrapper around the real installer); "noupdate": REPEAT call homes that must be answered 304;
# "anchors": one call home answered 304 after which the anchor policy must have taken a new
# signed anchor set (its refresh fetched and verified it).
import gc
import sys
import time

import benv

host, image, board_dir, mode = sys.argv[1:5]
repeat = int(sys.argv[5]) if len(sys.argv) > 5 else 1
dev_flash = benv.mount(host, image)

from ias import board_unix, device  # noqa: E402

board = board_unix.VirtualBoard(board_dir)
board.sync_clock(0)
dev = device.Device.open({"board": board})
dev.start_network()  # Wi-Fi, clock, the anchors' dates: as Device.run() starts
gc.collect()
heap_ready = gc.mem_alloc()

phases = {}
if mode == "timed":
    make = dev._make_installer

    class Timed:
        # Delegates to the real installer; notes when the body starts and when finish() runs.
        def __init__(self, inner):
            self.inner = inner

        def begin(self, size, name, version):
            self.inner.begin(size, name, version)
            phases["body"] = time.ticks_us()

        def write(self, chunk):
            self.inner.write(chunk)

        def finish(self, md5, sha):
            phases["finish"] = time.ticks_us()
            self.inner.finish(md5, sha)
            phases["done"] = time.ticks_us()

        def abort(self):
            self.inner.abort()

        def activate(self):
            self.inner.activate()

    dev._make_installer = lambda: lambda first, trusted: Timed(make()(first, trusted))

if mode in ("update", "timed"):
    t0 = time.ticks_us()
    out = dev.call_home()
    if out["outcome"] != "updated":
        raise SystemExit("outcome %s %s %s" % (out["outcome"], out["reason"], out.get("detail")))
    out["installer"].activate()
    us = time.ticks_diff(time.ticks_us(), t0)
    dev.slots.forget()
    info = dev.slots.read()
    assert info["active"] == "slot_b" and info["md5"] == out.get("md5", info["md5"]), info
    for k in phases:
        phases[k] = time.ticks_diff(phases[k], t0)
    benv.emit(
        kind="update",
        us=us,
        phases=phases,
        size=out.get("size"),
        heap_ready=heap_ready,
        programs=dev_flash.programs,
        erases=dev_flash.erases,
    )
elif mode == "anchors":
    out = dev.call_home()
    if out["outcome"] != "up-to-date":
        raise SystemExit("outcome %s %s" % (out["outcome"], out["reason"]))
    if not (dev.state.get("anchors_pending") or dev.state.get("anchors_version")):
        raise SystemExit("no anchor set taken")
    benv.emit(kind="anchors", pending=bool(dev.state.get("anchors_pending")))
else:
    for i in range(repeat):
        p0, e0 = dev_flash.programs, dev_flash.erases
        t0 = time.ticks_us()
        out = dev.call_home()
        us = time.ticks_diff(time.ticks_us(), t0)
        if out["outcome"] != "up-to-date":
            raise SystemExit("outcome %s %s" % (out["outcome"], out["reason"]))
        benv.emit(
            kind="noupdate",
            i=i,
            us=us,
            programs=dev_flash.programs - p0,
            erases=dev_flash.erases - e0,
        )
print("OK")
