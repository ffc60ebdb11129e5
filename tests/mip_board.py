# Runs on the MicroPython unix port: what a user types at a board's REPL to install the client
# with mip, done on a virtual board's flash (littlefs on the NOR model, mounted at / as the
# board mounts it). Before: the client and the root files are removed, so all of them come from
# mip; the anchor the board was given (its server's root) is kept under another name, as an
# operator adds their own server's root beside the shipped ones. After: the virtual board's own
# hardware modules (board_unix.py, vpartition.py, which no chip ships) are added from FIRMWARE.
#   micropython mip_board.py BOARD_DIR BASE_URL FIRMWARE
import os
import sys

import mip
import vfs
from nor import BLOCK, NorFlash

board, base, firmware = sys.argv[1:4]
dev = NorFlash(os.stat(board + "/flash.bin")[6] // BLOCK, path=board + "/flash.bin")
vfs.umount("/")
vfs.mount(vfs.VfsLfs2(dev), "/")
vfs.mount(vfs.VfsPosix(firmware), "/fw")


def rmtree(path):
    for entry in os.ilistdir(path):
        full = path + "/" + entry[0]
        if entry[1] == 0x4000:
            rmtree(full)
        else:
            os.remove(full)
    os.rmdir(path)


with open("/cert/iasRootCa.cer", "rb") as f:
    lab_root = f.read()
for path in ("/lib", "/www"):
    rmtree(path)
for path in ("/boot.py", "/main.py"):
    os.remove(path)

mip.install(base + "/root.json", target="/")
mip.install(base + "/package.json", target="/lib")

with open("/cert/labRoot.cer", "wb") as f:
    f.write(lab_root)
for name in ("board_unix.py", "vpartition.py"):
    with open("/fw/" + name, "rb") as fi, open("/lib/ias/" + name, "wb") as fo:
        fo.write(fi.read())
print("MIP-INSTALLED", sorted(os.listdir("/lib/ias"))[:3], sorted(os.listdir("/cert")))
