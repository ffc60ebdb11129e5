"""`ias publish SRC_DIR --key update.key --name N --version V -o OUTDIR`: a signed static channel.

Writes, ready to upload with any tool to any static host or CDN (GitHub Releases, an S3-style
bucket, nginx):

    OUTDIR/channel.json       {"kind": "channel", "app", "version", "counter", "bundle",
                               "size", "sha256", "poll"?, "anchors"?}: what the device polls
    OUTDIR/channel.json.sig   RSA PKCS#1 v1.5 SHA-256 over channel.json's exact bytes
    OUTDIR/N-V.tar[.gz]       the signed app bundle (tools/bundle.py)
    OUTDIR/anchors.json(.sig) the signed anchor bundle, when --anchors DIR is given

"bundle" and "anchors" are relative to channel.json unless --base-url makes them absolute (for
a bundle kept on another host). Devices take settings["channel"] = the URL of channel.json.
See docs/channel.md.
"""

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

try:
    from tools import bundle as bundle_mod
    from tools import keys as keys_mod
except ImportError:  # run as `python tools/publish.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tools import bundle as bundle_mod
    from tools import keys as keys_mod

CHANNEL = "channel.json"
MAX_CHANNEL = 4096  # firmware/channel.py MAX_CHANNEL: the device refuses more, unread
ANCHORS = "anchors.json"
SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+")


def bundle_name(name, version, compress=False):
    """A file name every host accepts without escaping: N-V.tar(.gz)."""
    base = "".join(c if c in SAFE else "_" for c in "%s-%s" % (name, version))
    return base + (".tar.gz" if compress else ".tar")


def _url(base_url, filename):
    if not base_url:
        return filename
    return base_url.rstrip("/") + "/" + filename


def channel_bytes(name, version, counter, bundle_url, data, poll=None, anchors_url=None):
    """The exact bytes of channel.json (compact, sorted keys: stable for diffs and ETags)."""
    doc = {
        "kind": "channel",  # in the signed bytes: never taken as another signed document
        "app": name,
        "version": version,
        "counter": counter,
        "bundle": bundle_url,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if poll is not None:
        if not isinstance(poll, int) or poll < 60:
            raise ValueError("--poll must be a whole number of seconds >= 60")
        doc["poll"] = poll
    if anchors_url:
        doc["anchors"] = anchors_url
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    if len(raw) > MAX_CHANNEL:
        raise ValueError(
            "channel.json is %d bytes; devices read at most %d" % (len(raw), MAX_CHANNEL)
        )
    return raw


def publish(
    src_dir,
    key,
    name,
    version,
    out_dir,
    counter=0,
    base_url=None,
    anchors_dir=None,
    poll=None,
    compress=False,
):
    """Build the bundle and write the static tree into out_dir; returns {role: Path}."""
    if base_url and not (base_url.startswith("https://") or base_url.startswith("http://")):
        raise ValueError("--base-url must start with https:// or http://")
    data = bundle_mod.build(src_dir, key, name, version, counter, compress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    fname = bundle_name(name, version, compress)
    paths["bundle"] = out / fname
    paths["bundle"].write_bytes(data)
    anchors_url = None
    if anchors_dir is not None:
        src = Path(anchors_dir)
        for f in (ANCHORS, ANCHORS + ".sig"):
            if not (src / f).is_file():
                raise FileNotFoundError(
                    "%s has no %s (make it with `ias bundle anchors`)" % (src, f)
                )
            shutil.copyfile(src / f, out / f)
        paths["anchors"] = out / ANCHORS
        paths["anchors_sig"] = out / (ANCHORS + ".sig")
        anchors_url = _url(base_url, ANCHORS)
    raw = channel_bytes(name, version, counter, _url(base_url, fname), data, poll, anchors_url)
    # the signature first: a channel.json without its .sig is refused, never half-trusted
    paths["signature"] = out / (CHANNEL + ".sig")
    paths["signature"].write_bytes(bundle_mod.sign(key, raw))
    paths["channel"] = out / CHANNEL
    paths["channel"].write_bytes(raw)
    return paths


def cmd_publish(args):
    key = keys_mod.load_private(args.key)
    paths = publish(
        args.src,
        key,
        args.name,
        args.version,
        args.output,
        args.counter,
        args.base_url,
        args.anchors,
        args.poll,
        args.gzip,
    )
    doc = json.loads(paths["channel"].read_bytes())
    print(
        "channel %s %s (counter %d) in %s:" % (args.name, args.version, args.counter, args.output)
    )
    for role in ("channel", "signature", "bundle", "anchors", "anchors_sig"):
        if role in paths:
            print("  %-22s %8d bytes" % (paths[role].name, paths[role].stat().st_size))
    print("bundle sha256 %s" % doc["sha256"])
    print("upload every file to one folder; set each device's channel to the URL of channel.json")
    return 0


def add_parser(subparsers, summary="write a signed static update channel for any static host"):
    p = subparsers.add_parser("publish", help=summary, description=summary)
    p.add_argument("src", metavar="SRC_DIR", help="the app's files (app.py and what it needs)")
    p.add_argument("--key", required=True, help="the operator's private key (update.key)")
    p.add_argument("--name", required=True, help="app name")
    p.add_argument("--version", required=True, help="app version")
    p.add_argument("--counter", type=int, default=0, help="anti-rollback security counter (0)")
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="absolute URL of the folder holding the bundle (default: beside channel.json)",
    )
    p.add_argument("--anchors", metavar="DIR", help="folder with anchors.json and its .sig")
    p.add_argument("--poll", type=int, help="suggested poll interval, seconds (>= 60)")
    p.add_argument("--gzip", action="store_true", help="compress the bundle (.tar.gz)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.set_defaults(func=cmd_publish)
    return p


def main(argv=None):
    parser = argparse.ArgumentParser(prog="publish")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["publish"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
