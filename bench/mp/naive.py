# Baseline (a): an updater written the way the popular MicroPython OTA updaters are: the
# micropython-lib `requests` (frozen in the unix build), `.content` of the whole file, then the
# file written to flash and its MD5 compared with x-MD5. Like them, TLS is not verified.
#   micropython [-X heapsize=N] -m naive HOST IMAGE URL MD5_INSTALLED
import binascii
import hashlib
import sys

import benv

host, image, url, installed = sys.argv[1:5]
benv.mount(host, image)

import requests  # noqa: E402

headers = {
    "User-Agent": "ESP-http-Update",
    "x-ESP-VERSION": "BenchApp v1.0",
    "x-ESP-SKETCH-MD5": installed,
    "x-ESP-MODE": "sketch",
}
r = requests.get(url + "/ota/updates?", headers=headers)
assert r.status_code == 200, r.status_code
want = r.headers.get("x-MD5") or r.headers.get("x-md5")
data = r.content
r.close()
with open("/update.bin", "wb") as f:
    f.write(data)
got = binascii.hexlify(hashlib.md5(data).digest()).decode()
assert got == want, (got, want)
benv.emit(kind="naive", size=len(data))
print("OK")
