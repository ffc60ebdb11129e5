"""Bytes on the wire for a download cut part-way: resumed with Range vs restarted from zero.

The real firmware (channel.py + appbundle.py in the MicroPython unix port) polls a tree from
tools/publish.py on tests/statichost.py (plain HTTP on loopback). The host cuts the bundle
once at a given fraction; the next poll either resumes (`Range: bytes=N-`, 206) or, when the
host ignores Range, fetches the whole file again. Both must end with the same installed app.

    python -m bench.channel_resume          (also run by `make bench`)
"""

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import test_channel_e2e as e2e  # noqa: E402
from statichost import StaticHost  # noqa: E402

from tools import keys as keys_mod  # noqa: E402
from tools import pki  # noqa: E402

CUTS = (0.1, 0.5, 0.9)
BUNDLE = "/Blink-1.1.0.tar"


def _world(base):
    key_path, pub_path = keys_mod.write_pair(base / "keys", bits=2048)
    script = base / "device.py"
    script.write_text(e2e.DEVICE)
    return {
        "base": base,
        "key": keys_mod.load_private(key_path),
        "pub": pub_path.read_bytes(),
        "root_ca": pki.make_ca("Bench Root"),
        "script": script,
    }


def _transfer(world, tree, work, cut, honour_range):
    root = e2e.flash(world, work)
    with StaticHost(tree) as host:
        host.ignore_range = not honour_range
        host.cut(BUNDLE, cut)
        url = host.url("/channel.json")
        first = e2e.poll(world, root, url)
        second = e2e.poll(world, root, url)
        if first["reason"] != "closed" or second["outcome"] != "updated":
            raise RuntimeError("unexpected outcomes %r / %r" % (first, second))
        e2e.assert_installed(root)
        return host.sent_bytes(BUNDLE)


def run():
    with tempfile.TemporaryDirectory(prefix="bench-channel-") as tmp:
        base = Path(tmp)
        world = _world(base)
        tree = e2e.site(world, base)
        size = (tree / BUNDLE[1:]).stat().st_size
        rows = []
        for i, frac in enumerate(CUTS):
            cut = int(size * frac)
            resumed = _transfer(world, tree, base / ("r%d" % i), cut, True)
            restart = _transfer(world, tree, base / ("f%d" % i), cut, False)
            rows.append(
                {
                    "cut_at": cut,
                    "resumed_bytes": resumed,
                    "restart_bytes": restart,
                    "saved_pct": round(100.0 * (restart - resumed) / restart, 1),
                }
            )
    print("channel resume: bundle %d bytes, one cut, then one more poll" % size)
    print("%10s %14s %14s %8s" % ("cut at", "resumed (B)", "restart (B)", "saved"))
    for r in rows:
        print(
            "%10d %14d %14d %7.1f%%"
            % (r["cut_at"], r["resumed_bytes"], r["restart_bytes"], r["saved_pct"])
        )
    return {"bundle_bytes": size, "rows": rows}


def main():
    run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
