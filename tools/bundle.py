"""`ias bundle build SRC_DIR --key update.key --name N --version V -o OUT`: a signed app bundle.

An app bundle is a ustar archive (optionally gzip-compressed) whose first member is
manifest.json and whose second is manifest.sig, then the app's files:

    manifest.json  {"kind": "manifest", "format": 1, "name": N, "version": V, "counter": C,
                    "space": bytes,
                    "files": [{"path": "app.py", "size": 123, "sha256": "<hex>"}, ...]}
    manifest.sig   RSA PKCS#1 v1.5 SHA-256 signature of manifest.json's exact bytes

"kind" is in the signed bytes so the signature is never taken for another kind of document
(docs/trust-continuity.md, "Typed signatures"). The device (appbundle.py) checks the signature
and the kind before it writes any file, then every file's size and SHA-256; `counter` is the
anti-rollback security counter (raise it when an older version must never be installed again).
Builds are reproducible: fixed owners, modes, times.

`--gzip` compresses with a small deflate window (GZIP_WBITS: 2**10 = 1 KiB, what an ESP8266's
heap affords; an ESP32 affords 4 KiB) and declares it in the gzip header's extra field, subfield
"WB" with one byte, the window bits. The device decompresses with exactly that window and
refuses a gzip whose window is undeclared (a default gzip needs 32 KiB) or above its board's
`deflate_wbits`, before it allocates (firmware/tarstream.py gunzip). Other gzip tools ignore the
subfield: the file stays an ordinary .tar.gz.
"""

import argparse
import hashlib
import io
import json
import sys
import tarfile
import zlib
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

try:
    from tools import keys as keys_mod
except ImportError:  # run as `python tools/bundle.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tools import keys as keys_mod

FORMAT = 1
MAX_NAME = 32  # settings.app_name
MAX_VERSION = 11  # settings.app_version
MAX_PATH = 255
MAX_MANIFEST = 8192  # the device reads manifest.json into RAM: keep in step with appbundle.py
BLOCK = 4096  # flash block: the free space a file really takes is rounded up to it
PATH_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+/")
SKIP = {"__pycache__", ".git", ".DS_Store"}
GZIP_WBITS = 10  # the deflate window of --gzip: 1 KiB, within every board's deflate_wbits
WINDOW_SUBFIELD = b"WB"  # gzip FEXTRA subfield id (RFC 1952 2.3.1.1): the window bits, one byte


def collect(src_dir):
    """[(relative path, Path)] of the regular files under src_dir, sorted; refuses what the
    device would refuse (odd names, links)."""
    root = Path(src_dir)
    if not root.is_dir():
        raise NotADirectoryError("%s is not a folder" % src_dir)
    files = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part in SKIP or part.startswith(".") for part in rel.parts):
            continue
        if p.is_symlink():
            raise ValueError("%s is a symbolic link; bundles hold regular files only" % rel)
        if p.is_dir():
            continue
        name = rel.as_posix()
        bad = set(name) - PATH_CHARS
        if bad or len(name) > MAX_PATH or name in ("manifest.json", "manifest.sig"):
            raise ValueError("file name %r cannot go into a bundle" % name)
        files.append((name, p))
    if not files:
        raise ValueError("%s holds no files" % src_dir)
    return files


def app_md5(src_dir):
    """The MD5 that names a factory-installed app (what `ias sim init` puts in slot_a), reported
    in x-ESP-SKETCH-MD5 until the first update: over the files collect() lists, in its order,
    each as its relative path, a newline, its size in decimal, a newline and its bytes. It
    depends on the app's content only (not on tar or gzip metadata); see docs/callhome.md."""
    md5 = hashlib.md5()
    for name, path in collect(src_dir):
        data = path.read_bytes()
        md5.update(b"%s\n%d\n" % (name.encode(), len(data)))
        md5.update(data)
    return md5.hexdigest()


def manifest_bytes(files, name, version, counter):
    entries = []
    space = BLOCK * 2  # the slot folder and littlefs metadata
    folders = set()
    for rel, path in files:
        data = path.read_bytes()
        entries.append(
            {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )
        space += -(-max(len(data), 1) // BLOCK) * BLOCK
        folders.update(rel.split("/")[:-1])
    space += BLOCK * len(folders)
    doc = {
        "kind": "manifest",  # in the signed bytes: never taken as another signed document
        "format": FORMAT,
        "name": name,
        "version": version,
        "counter": counter,
        "space": space,
        "files": entries,
    }
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    if len(raw) > MAX_MANIFEST:
        raise ValueError(
            "manifest is %d bytes, the device reads at most %d" % (len(raw), MAX_MANIFEST)
        )
    return raw


def sign(key, data):
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def gzip_small_window(data, wbits=GZIP_WBITS):
    """A gzip member (RFC 1952) of `data` compressed with a 2**wbits-byte window, which its header
    declares in the extra field (subfield WB); reproducible (mtime 0)."""
    if not 9 <= wbits <= 15:
        raise ValueError("the window bits must be 9 to 15")
    comp = zlib.compressobj(9, zlib.DEFLATED, -wbits, 9)
    body = comp.compress(data) + comp.flush()
    extra = WINDOW_SUBFIELD + (1).to_bytes(2, "little") + bytes((wbits,))
    # magic, CM deflate, FLG FEXTRA, MTIME 0, XFL 2 (best compression), OS 255 (unknown)
    head = b"\x1f\x8b\x08\x04" + b"\x00\x00\x00\x00" + b"\x02\xff"
    head += len(extra).to_bytes(2, "little") + extra
    tail = zlib.crc32(data).to_bytes(4, "little") + (len(data) & 0xFFFFFFFF).to_bytes(4, "little")
    return head + body + tail


def build(src_dir, key, name, version, counter=0, compress=False, wbits=GZIP_WBITS):
    """The bundle's bytes. `key`: an RSA private key, or None for an unsigned bundle (accepted
    only by ESP32 devices over verified TLS with allow_unsigned set)."""
    if not name or len(name) > MAX_NAME:
        raise ValueError(
            "--name %r: 1 to %d characters (what the device keeps as its app name)"
            % (name, MAX_NAME)
        )
    if not version or len(version) > MAX_VERSION:
        raise ValueError(
            "--version %r has %d characters: 1 to %d, because IAS keeps %d characters of a "
            "version (x-ver, the device's app_version); e.g. 1.10.2"
            % (version, len(version), MAX_VERSION, MAX_VERSION)
        )
    if not isinstance(counter, int) or counter < 0:
        raise ValueError("--counter must be a whole number >= 0")
    files = collect(src_dir)
    manifest = manifest_bytes(files, name, version, counter)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _add(tar, "manifest.json", manifest)
        if key is not None:
            _add(tar, "manifest.sig", sign(key, manifest))
        for rel, path in files:
            _add(tar, rel, path.read_bytes())
        end = tar.offset
    # tarfile pads to a 10 KiB record; the device stops at the two zero blocks, so drop the rest.
    data = out.getvalue()[: end + 1024]
    if compress:
        data = gzip_small_window(data, wbits)
    return data


def _private_key(path):
    try:
        return keys_mod.load_private(path)
    except ValueError:
        raise ValueError(
            "--key %s is not an RSA private key: give the operator's update.key from "
            "`ias keys new` (the .pub goes to devices)" % path
        ) from None


def cmd_build(args):
    key = None if args.unsigned else _private_key(args.key)
    data = build(args.src, key, args.name, args.version, args.counter, args.gzip, args.wbits)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)  # e.g. artifacts/APP/
    Path(args.output).write_bytes(data)
    print(
        "%s: %s %s, counter %d, %d bytes%s, md5 %s"
        % (
            args.output,
            args.name,
            args.version,
            args.counter,
            len(data),
            " (gzip, %d-byte window)" % (1 << args.wbits) if args.gzip else "",
            hashlib.md5(data).hexdigest(),
        )
    )
    return 0


def add_build_parser(subs):
    b = subs.add_parser("build", help="sign a folder of app files into a bundle")
    b.add_argument("src", metavar="SRC_DIR", help="the app's files (app.py and what it needs)")
    key = b.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", help="the operator's private key (update.key)")
    key.add_argument(
        "--unsigned", action="store_true", help="no signature (ESP32 + verified TLS only)"
    )
    b.add_argument("--name", required=True, help="app name (x-name)")
    b.add_argument("--version", required=True, help="app version (x-ver)")
    b.add_argument("--counter", type=int, default=0, help="anti-rollback security counter (0)")
    b.add_argument("--gzip", action="store_true", help="compress (.tar.gz, small window)")
    b.add_argument(
        "--wbits",
        type=int,
        choices=range(9, 16),
        default=GZIP_WBITS,
        metavar="9..15",
        help="--gzip window: 2**wbits bytes (default %d: every board; ESP32 only: up to 12)"
        % GZIP_WBITS,
    )
    b.add_argument("-o", "--output", required=True, metavar="OUT")
    b.set_defaults(func=cmd_build)
    return b


def add_parser(subparsers, summary="build and sign app bundles and anchor bundles"):
    p = subparsers.add_parser("bundle", help=summary, description=summary)
    subs = p.add_subparsers(dest="bundle_command", metavar="ACTION")
    subs.required = True
    add_build_parser(subs)
    from tools import anchorbundle

    a = subs.add_parser(
        "anchors",
        help="sign an anchor bundle (anchors.json + .sig) devices install to trust new roots",
        description=anchorbundle.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    anchorbundle.add_arguments(a)
    return p


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bundle")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bundle"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
