"""CPython: the keys, signatures, bundles and firmware images the MicroPython-side OTA tests use,
made at test time with the real host tools (tools/keys.py, tools/bundle.py, tools/espimage.py).

    python ota_mkfixtures.py OUTDIR [SET ...]
        SET: trust, bundles, firmware, big, powercut, typed
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from tools import bundle, espimage, keys  # noqa: E402

APP_V1 = {
    "app.py": b"VERSION = '1.0'\n\ndef start(api):\n    pass\n",
    "lib/util.py": b"def twice(x):\n    return 2 * x\n",
    "data/blob.bin": bytes(range(256)) * 9,
}
APP_V2 = {
    "app.py": b"VERSION = '2.0'\n\ndef start(api):\n    api.log('v2')\n",
    "lib/util.py": b"def twice(x):\n    return x + x\n",
    "lib/extra.py": b"EXTRA = True\n",
    "data/blob.bin": bytes(range(255, -1, -1)) * 11,
}


BOMB_ZEROS = 4 * 1024 * 1024


def write_tree(folder, files):
    for rel, data in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return folder


def save_key(out, name, key):
    (out / (name + ".pub")).write_bytes(keys.public_pem(key))
    (out / (name + ".key")).write_bytes(keys.private_pem(key))


def raw_sign(key, em):
    """m^d mod n of a crafted encoded message: signatures a lax verifier might accept."""
    p = key.private_numbers()
    n = p.public_numbers.n
    k = (n.bit_length() + 7) // 8
    return pow(int.from_bytes(em, "big"), p.d, n).to_bytes(k, "big")


def forged_ems(k, digest):
    info = bytes.fromhex("3031300d060960864801650304020105000420")
    sha1_info = bytes.fromhex("3021300906052b0e03021a05000414")
    good = b"\x00\x01" + b"\xff" * (k - 3 - 51) + b"\x00" + info + digest
    no_null = bytes.fromhex("302f300b0609608648016503040201") + b"\x04\x20" + digest
    return {
        "good": good,
        "bt2": b"\x00\x02" + good[2:],
        "garbage_tail": b"\x00\x01" + b"\xff" * 8 + b"\x00" + info + digest + b"\x00" * (k - 62),
        "short_pad": (b"\x00\x01" + b"\xff" * 7 + b"\x00" + info + digest).rjust(k, b"\x00"),
        "no_null": b"\x00\x01" + b"\xff" * (k - 3 - len(no_null)) + b"\x00" + no_null,
        "sha1_info": b"\x00\x01"
        + b"\xff" * (k - 3 - 15 - 32)
        + b"\x00"
        + sha1_info
        + digest[:20]
        + b"\x00" * 12,
    }


def make_trust(out):
    msg = b"manifest bytes to sign\n" * 3
    (out / "msg.bin").write_bytes(msg)
    for name, bits in (("k2048", 2048), ("k3072", 3072), ("k4096", 4096), ("other", 2048)):
        key = keys.new_key(bits)
        save_key(out, name, key)
        (out / (name + ".sig")).write_bytes(bundle.sign(key, msg))
    key = keys.load_private(out / "k2048.key")
    k = 256
    for label, em in forged_ems(k, hashlib.sha256(msg).digest()).items():
        assert len(em) == k, (label, len(em))
        (out / ("forged_%s.sig" % label)).write_bytes(raw_sign(key, em))
    e3 = rsa.generate_private_key(public_exponent=3, key_size=2048)
    (out / "e3.pub").write_bytes(keys.public_pem(e3))


def tar_of(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def flip_in_member(tar, name):
    """A copy of the archive with one data byte of member `name` changed (headers intact)."""
    data = bytearray(tar)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        m = t.getmember(name)
    data[m.offset_data] ^= 0x01
    return bytes(data)


def make_bundles(out):
    key = keys.new_key(3072)
    other = keys.new_key(2048)
    save_key(out, "update", key)
    save_key(out, "other", other)
    v1 = write_tree(out / "src_v1", APP_V1)
    v2 = write_tree(out / "src_v2", APP_V2)
    b = {}
    b["v1"] = bundle.build(v1, key, "blink", "1.0", counter=1)
    b["v2"] = bundle.build(v2, key, "blink", "2.0", counter=2)
    b["v2gz"] = bundle.build(v2, key, "blink", "2.0", counter=2, compress=True)
    b["v2gz12"] = bundle.build(v2, key, "blink", "2.0", counter=2, compress=True, wbits=12)
    b["v2gz_default"] = gzip.compress(b["v2"], compresslevel=9, mtime=0)  # a 32 KiB window
    # A gzip that declares a 1 KiB window but refers 3000 bytes back (compressed with 32 KiB).
    far = os.urandom(3000)
    lie = bundle.gzip_small_window(tar_of([("far.bin", far + far)]), 15)
    b["window_lie"] = lie.replace(bundle.WINDOW_SUBFIELD + b"\x01\x00\x0f", b"WB\x01\x00\x0a", 1)
    b["window_honest"] = lie
    # A gzip bomb: the signed v2 and then 4 MiB of zeros after the tar's end (about 4 KB
    # compressed); the same v2 re-padded (zeros within a tar record) and re-compressed: other
    # bytes, the same signed manifest.
    b["bomb"] = bundle.gzip_small_window(b["v2"] + bytes(BOMB_ZEROS))
    b["v2pad"] = b["v2"] + bytes(4096)
    b["v2gz9"] = bundle.gzip_small_window(b["v2"] + bytes(512), 9)
    b["v0"] = bundle.build(v1, key, "blink", "0.9", counter=0)
    b["v3"] = bundle.build(v1, key, "blink", "3.0", counter=2)
    b["other"] = bundle.build(v2, other, "blink", "2.0", counter=2)
    b["unsigned"] = bundle.build(v2, None, "blink", "2.0", counter=2)
    b["tampered"] = flip_in_member(b["v2"], "lib/util.py")
    # hand-made archives: manifests that disagree with the files, all properly signed
    man2 = bundle.manifest_bytes(bundle.collect(v2), "blink", "2.0", 2)
    sig2 = bundle.sign(key, man2)
    files2 = [(p, (v2 / p).read_bytes()) for p in sorted(APP_V2)]
    head = [("manifest.json", man2), ("manifest.sig", sig2)]
    b["extra"] = tar_of(head + files2 + [("evil.py", b"print('x')\n")])
    b["missing"] = tar_of(head + [f for f in files2 if f[0] != "lib/extra.py"])
    b["resized"] = tar_of(head + [(p, d + b"#" if p == "app.py" else d) for p, d in files2])
    b["badsig"] = tar_of([("manifest.json", man2), ("manifest.sig", sig2[:-1] + b"\x00")] + files2)
    b["sig_last"] = tar_of([("manifest.json", man2)] + files2 + [("manifest.sig", sig2)])
    b["no_manifest"] = tar_of(files2)
    b["traversal"] = tar_of(head + [("../evil.py", b"x")])
    bad_man = json.loads(man2)
    bad_man["files"][0]["path"] = "/abs.py"
    raw = json.dumps(bad_man).encode()
    b["bad_manifest"] = tar_of([("manifest.json", raw), ("manifest.sig", bundle.sign(key, raw))])
    for name, data in b.items():
        (out / ("%s.tar" % name)).write_bytes(data)
    meta = {name: hashlib.md5(data).hexdigest() for name, data in b.items()}
    (out / "md5.json").write_text(json.dumps(meta))


def make_big(out):
    key = keys.load_private(out / "update.key") if (out / "update.key").exists() else None
    if key is None:
        key = keys.new_key(3072)
        save_key(out, "update", key)
    for label, size in (("small", 64 * 1024), ("big", 1024 * 1024)):
        src = out / ("src_" + label)
        files = {"app.py": b"VERSION = %r\n" % label}
        chunk = size // 4
        for i in range(4):
            files["data/part%d.bin" % i] = os.urandom(chunk)
        write_tree(src, files)
        (out / (label + ".tar")).write_bytes(bundle.build(src, key, "heap", label, counter=1))


def make_firmware(out):
    v1 = espimage.app_image("v1.0", "micropython", payload=os.urandom(9000))
    v2 = espimage.app_image("v2.0", "micropython", payload=os.urandom(20000))
    (out / "fw_v1.bin").write_bytes(v1)
    (out / "fw_v2.bin").write_bytes(v2)
    (out / "fw_combined.bin").write_bytes(espimage.combined_image(v2))
    bad = bytearray(v2)
    bad[3000] ^= 0x40  # segment data: checksum and appended SHA-256 no longer match
    (out / "fw_corrupt.bin").write_bytes(bytes(bad))
    (out / "fw_truncated.bin").write_bytes(v2[:-100])
    nodesc = bytearray(v2)
    nodesc[0x20:0x24] = b"\x00\x00\x00\x00"
    (out / "fw_nodesc.bin").write_bytes(bytes(nodesc))


def make_typed(out):
    """One signed document of each kind, as the host tools write it, plus two polyglots (a
    document that parses as two kinds: the case typed signatures exist for) and untyped copies
    of each (signed before kinds existed). Each doc also comes as a bundle whose manifest.json
    and manifest.sig it is, so the device can be offered it as a manifest."""
    import time

    from tools import anchorbundle, pki, publish

    key = keys.new_key(2048)
    save_key(out, "update", key)
    pem = keys.private_pem(key)
    now = int(time.time())
    src = write_tree(out / "src", {"app.py": b"VERSION = 'typed'\n"})
    docs = {"manifest": bundle.manifest_bytes(bundle.collect(src), "blink", "2.0", 2)}
    ca = pki.make_ca("Typed Root").pem.decode()
    docs["anchors"] = anchorbundle.bundle_bytes(3, [ca], now + 400 * 86400)
    rot = anchorbundle.build_key_doc(
        pem, 3, [keys.public_pem(keys.new_key(2048))], now, out / "rot"
    )
    docs["keys"] = rot[0].read_bytes()
    docs["channel"] = publish.channel_bytes("blink", "2.0", 2, "b.tar", b"bundle bytes")
    man, ank = json.loads(docs["manifest"]), json.loads(docs["anchors"])
    chan, kdoc = json.loads(docs["channel"]), json.loads(docs["keys"])
    docs["poly_channel"] = json.dumps(dict(man, **chan)).encode()  # also a whole manifest
    docs["poly_anchors"] = json.dumps(dict(kdoc, **ank)).encode()  # also a whole keys.json
    for name in list(docs):
        untyped = json.loads(docs[name])
        del untyped["kind"]
        docs["untyped_" + name] = json.dumps(untyped).encode()
    app = (src / "app.py").read_bytes()
    for name, raw in docs.items():
        sig = bundle.sign(key, raw)
        (out / (name + ".json")).write_bytes(raw)
        (out / (name + ".json.sig")).write_bytes(sig)
        tar = tar_of([("manifest.json", raw), ("manifest.sig", sig), ("app.py", app)])
        (out / (name + ".tar")).write_bytes(tar)
    (out / "typed.json").write_text(json.dumps({"now": now, "docs": sorted(docs)}))


def main(argv):
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    sets = argv[2:] or ["trust", "bundles", "firmware"]
    if "trust" in sets:
        make_trust(out)
    if "bundles" in sets or "powercut" in sets:
        make_bundles(out)
    if "big" in sets:
        make_big(out)
    if "firmware" in sets:
        make_firmware(out)
    if "typed" in sets:
        make_typed(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
