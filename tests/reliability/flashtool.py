# Runs inside micropython (MICROPYPATH=tools/vboard): inspects or edits a virtual board's flash
# without booting it.  micropython flashtool.py DIR dump | put FLASH_PATH HOST_FILE
# dump prints one JSON line {path: sha256 hex} for every file on the flash.
import binascii
import hashlib
import json
import os
import sys

import vfs
from nor import BLOCK, NorFlash


def mount(host):
    size = os.stat(host + "/flash.bin")[6]
    dev = NorFlash(size // BLOCK, path=host + "/flash.bin")
    vfs.mount(vfs.VfsLfs2(dev), "/f")
    return dev


def walk(path, out):
    for entry in os.ilistdir(path):
        full = path + "/" + entry[0]
        if entry[1] == 0x4000:
            walk(full, out)
        else:
            h = hashlib.sha256()
            buf = bytearray(BLOCK)
            with open(full, "rb") as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    h.update(memoryview(buf)[:n])
            out[full[2:]] = binascii.hexlify(h.digest()).decode()
    return out


def main(argv):
    host, cmd = argv[1], argv[2]
    mount(host)
    if cmd == "dump":
        print(json.dumps(walk("/f", {})))
    elif cmd == "put":
        with open(argv[4], "rb") as src:
            data = src.read()
        with open("/f" + argv[3], "wb") as dst:
            dst.write(data)
    elif cmd == "cat":
        with open("/f" + argv[3], "rb") as f:
            sys.stdout.buffer.write(f.read())
    vfs.umount("/f")


main(sys.argv)
