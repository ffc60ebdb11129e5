# Baseline (b): the floor of what is possible: one verified TLS stream (tls.SSLContext,
# CERT_REQUIRED, the server's root as the only anchor), the body read into one 4 KiB buffer and
# hashed with SHA-256; with SINK the body is also written to a littlefs file on the NOR model
# (the same sink as the client's). "get" mode: a minimal verified GET answered 304, REPEAT times.
#   micropython [-X heapsize=N] -m bare ROOT_DER PORT MD5 MODE [HOST IMAGE] [REPEAT]
# MODE: "body" (no sink), "sink" (write to flash), "get" (304, timed).
import hashlib
import socket
import sys
import time

import tls

root_path, port, md5, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(root_path, "rb") as f:
    root = f.read()
sink = None
if mode == "sink":
    import benv

    benv.mount(sys.argv[5], sys.argv[6])
repeat = int(sys.argv[7]) if len(sys.argv) > 7 else 1
REQ = (
    "GET /ota/updates? HTTP/1.1\r\nHost: localhost:%d\r\nx-ESP-VERSION: BenchApp v1.0\r\n"
    "x-ESP-SKETCH-MD5: %s\r\nx-ESP-MODE: sketch\r\nConnection: close\r\n\r\n" % (port, md5)
).encode()
buf = bytearray(4096)
addr = socket.getaddrinfo("localhost", port)[0][-1]


def fetch():
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    ctx.load_verify_locations(root)
    s = socket.socket()
    s.connect(addr)
    ss = ctx.wrap_socket(s, server_hostname="localhost")
    ss.write(REQ)
    h = hashlib.sha256()
    out = open("/update.bin", "wb") if mode == "sink" else None
    n = ss.readinto(buf)
    end = bytes(buf[: min(n, 1024)]).find(b"\r\n\r\n")
    status = int(bytes(buf[9:12]))
    total = 0
    view = memoryview(buf)
    chunk = view[end + 4 : n]
    while chunk:
        h.update(chunk)
        if out is not None:
            out.write(chunk)
        total += len(chunk)
        n = ss.readinto(buf)
        chunk = view[:n] if n else None
    ss.close()
    if out is not None:
        out.close()
    return status, total


for _ in range(repeat):
    t0 = time.ticks_us()
    status, total = fetch()
    us = time.ticks_diff(time.ticks_us(), t0)
    benv_emit = '@@ {"kind": "bare", "mode": "%s", "status": %d, "size": %d, "us": %d}'
    print(benv_emit % (mode, status, total, us))
print("OK")
