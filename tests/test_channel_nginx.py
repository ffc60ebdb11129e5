"""The static channel from a virtual ESP32 against Debian's nginx (issue 14, acceptance line 1).

Driven as a user would: `ias publish` writes the channel into the folder nginx serves,
`ias sim init DIR --channel URL --update-key update.pub [--anchor ca.cer]` makes the board, and
`ias sim boot DIR --cycles 1` powers it on: boot.py, then main.py's own loop, whose first cycle
polls the channel. Over TLS (a test CA, its root the board's only anchor) and over plain HTTP:

  1. installs the release and commits it; still runs it after 3 more power-ons;
  2. an unchanged channel costs one conditional GET answered 304, and no flash operation;
  3. follows a 302 (nginx's /moved/) to another host for the bundle;
  4. power pulled part way through a (rate-limited) download: the next boot asks for the rest
     with Range, gets 206, and installs the published files;
  5. refuses a channel signed by another key, a lower counter, and a bundle whose SHA-256
     differs: each after nginx served channel.json and its .sig, each leaving the device as it
     was.

What the board asked is read from nginx's access log (tests/nginxhost.py); what it did from its
console, its flash (`ias sim cat`/`ias sim ls`) and its flash operation counts (flash_ops.jsonl).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nginxhost import NginxHost

from tools import cli, pki
from tools import keys as keys_mod

REPO = Path(__file__).resolve().parent.parent
BLOB = 196608  # 192 KiB: about 3 s at the host's 64 KiB/s, so a download can be cut part way


def app_files(version, blob=0):
    code = "VERSION = %r\n\n\n" % version
    code += "def setup(ias):\n"
    code += "    print('blink app %s running (reported %s)' % (VERSION, ias.version))\n\n\n"
    code += "def loop(ias):\n    pass\n"
    files = {"app.py": code.encode(), "lib/helper.py": b"def twice(x):\n    return 2 * x\n"}
    if blob:  # incompressible, as firmware assets are
        files["data/blob.bin"] = bytes((i * 2654435761 >> 13) & 0xFF for i in range(blob))
    return files


def write_tree(folder, files):
    for rel, data in files.items():
        p = Path(folder) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return Path(folder)


def ias(*argv):
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("nginx")
    key, pub = keys_mod.write_pair(base / "keys", bits=2048)
    other_key, _ = keys_mod.write_pair(base / "other-keys", bits=2048)
    ca = pki.make_ca("Channel Test Root")
    inter = pki.make_ca("Channel Test CA", issuer=ca)
    (base / "ca.cer").write_bytes(ca.pem)
    site = base / "site"
    site.mkdir()
    with NginxHost(site, tls=(pki.make_leaf(inter), [inter])) as web:
        yield {
            "base": base,
            "key": key,
            "pub": pub,
            "other_key": other_key,
            "ca": base / "ca.cer",
            "site": site,
            "web": web,
        }


class Story:
    """One scheme's channel folder on nginx and one virtual board polling it."""

    def __init__(self, world, scheme, capsys, name=None):
        self.world = world
        self.web = world["web"]
        self.scheme = scheme
        self.name = name or scheme  # the channel's folder on nginx and the board's name
        self.capsys = capsys
        self.out = world["site"] / self.name  # what `ias publish -o` writes, as nginx serves it
        self.board = world["base"] / ("board-" + self.name)
        self.src = world["base"] / ("src-" + self.name)
        self.last_mtime = 0

    @property
    def path(self):
        return "/%s/channel.json" % self.name

    def publish(self, version, counter, key=None, files=None, base_url=None, out=None):
        out = out or self.out
        src = write_tree(self.src / out.name / version, files or app_files(version))
        argv = ["publish", src, "--key", key or self.world["key"], "--name", "Blink"]
        argv += ["--version", version, "--counter", counter, "-o", out]
        if base_url:
            argv += ["--base-url", base_url]
        assert ias(*argv) == 0
        if out != self.out:
            return json.loads((out / "channel.json").read_bytes())
        # nginx's ETag is mtime-size: a real upload never lands in the same second as the last
        # one, so make the new channel.json's mtime strictly later, as time would
        t = max(int(time.time()), self.last_mtime + 1)
        os.utime(out / "channel.json", (t, t))
        self.last_mtime = t
        return json.loads((out / "channel.json").read_bytes())

    def init(self):
        argv = ["sim", "init", self.board, "--channel", self.web.url(self.scheme, self.path)]
        argv += ["--update-key", self.world["pub"], "--app-name", "Blink"]
        # the operator's own host as its server too: a key-rotation look-up stays on loopback
        argv += ["--server", self.web.url(self.scheme, "")]
        argv += [
            "--app-version",
            "1.0.0",
            "--app",
            write_tree(self.src / "1.0.0", app_files("1.0.0")),
        ]
        if self.scheme == "https":
            argv += ["--anchor", self.world["ca"]]
        assert ias(*argv) == 0

    def console_since(self, offset):
        return (self.board / "console.log").read_text()[offset:]

    def console_size(self):
        p = self.board / "console.log"
        return len(p.read_text()) if p.exists() else 0

    def boot(self):
        """Power on; the main loop runs one cycle (its first cycle polls the channel). Returns
        (console of this run, nginx's log of this run, flash ops of each power-on)."""
        mark, at = self.web.mark(), self.console_size()
        ops_before = len(self.flash_ops())
        assert ias("sim", "boot", self.board, "--cycles", 1, "--quiet") == 0
        return self.console_since(at), self.web.since(mark), self.flash_ops()[ops_before:]

    def flash_ops(self):
        p = self.board / "flash_ops.jsonl"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines()]

    def cat(self, path):
        self.capsys.readouterr()
        assert ias("sim", "cat", self.board, path) == 0, path
        return self.capsys.readouterr().out

    def ls(self, path="/"):
        self.capsys.readouterr()
        assert ias("sim", "ls", self.board, path) == 0
        return self.capsys.readouterr().out

    def pointer(self):
        return json.loads(self.cat("/app.json"))

    def running(self, console, version):
        return "blink app %s running (reported %s)" % (version, version) in console

    def poll(self, status=200):
        """What a poll that fetches and verifies the channel asks nginx."""
        if status == 304:
            return [(self.path, 304)]
        return [(self.path, status), (self.path + ".sig", 200)]

    def file(self, name):
        return "/%s/%s" % (self.name, name)


def asked(log):
    return [(r["path"], r["status"]) for r in log]


def assert_committed(story, version, files):
    """The board's pointer names `version` with no trial left, and its active slot holds the
    published files (text compared, binary by size: the installer checked each SHA-256)."""
    pointer = story.pointer()
    assert pointer["version"] == version and "trial" not in pointer, pointer
    listing = story.ls("/" + pointer["active"])
    for rel, data in files.items():
        if rel.endswith(".bin"):
            assert "%s  %d" % (Path(rel).name, len(data)) in listing, (rel, listing)
        else:
            assert story.cat("/%s/%s" % (pointer["active"], rel)) == data.decode(), rel
    return pointer


def flash_files(story):
    """`ias sim ls /` without state.json (a refusal may note what it refused there) and the log
    (log.txt, log.1: a refusal is logged)."""
    noted = ("state.json", "log.txt  ", "log.1  ")
    return [line for line in story.ls("/").splitlines() if not any(n in line for n in noted)]


def assert_unchanged(story, before, log, console, why):
    """A refusal judged after the channel and its signature were fetched: the same files on
    flash (both slots, the pointer, settings, keys), the same version running."""
    assert asked(log)[:2] == story.poll(), asked(log)
    assert why in console, console
    assert flash_files(story) == before["files"]
    assert story.pointer() == before["pointer"]
    assert story.running(console, before["pointer"]["version"]), console


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_channel_on_nginx_from_a_virtual_esp32(world, scheme, capsys):
    story = Story(world, scheme, capsys)
    web = story.web

    # 1. the release installs, proves itself on its first poll, and stays after 3 more boots
    doc = story.publish("1.1.0", 1)
    story.init()
    console, log, ops = story.boot()
    # first boot: channel, signature, bundle, reset; trial boot: a full poll (the validators
    # belonged to the old version) that finds the channel's version installed, and commits
    installed = story.poll() + [(story.file(doc["bundle"]), 200)] + story.poll()
    assert asked(log) == installed, asked(log)
    assert story.running(console, "1.1.0"), console
    assert_committed(story, "1.1.0", app_files("1.1.0"))
    answered = log[-2]  # the trial's poll: what the board keeps the validators of
    for _ in range(3):
        console, log, ops = story.boot()
        assert story.running(console, "1.1.0"), console
        pointer = story.pointer()
        assert pointer["version"] == "1.1.0" and "trial" not in pointer, pointer

    # 2. unchanged: one conditional GET, 304, and not one flash program or erase
    console, log, ops = story.boot()
    assert asked(log) == story.poll(304), asked(log)
    assert answered["status"] == 200 and answered["etag"], answered
    assert log[0]["if_none_match"] == answered["etag"], log
    assert log[0]["if_modified_since"] == answered["last_modified"], log
    assert log[0]["body_sent"] == 0
    assert [(o["programs"], o["erases"]) for o in ops] == [(0, 0)], ops
    assert story.running(console, "1.1.0"), console
    assert "up-to-date (not modified)" in console, console

    # 3. the bundle moved to another host: nginx answers 302, the board follows it
    moved = web.url(scheme, "/moved/%s/" % scheme)
    doc = story.publish("1.2.0", 2, base_url=moved)
    console, log, ops = story.boot()
    bundle = [
        ("/moved" + story.file("Blink-1.2.0.tar"), 302),
        (story.file("Blink-1.2.0.tar"), 200),
    ]
    assert asked(log) == story.poll() + bundle + story.poll(), asked(log)
    front, other = web.ports[("front", scheme)], web.ports[("other", scheme)]
    assert [r["host"] for r in log[2:4]] == ["127.0.0.1:%d" % front, "localhost:%d" % other]
    assert story.running(console, "1.2.0"), console
    assert_committed(story, "1.2.0", app_files("1.2.0"))

    # 4. power pulled part way through a download; the next boot resumes it with Range
    files = app_files("1.3.0", blob=BLOB)
    doc = story.publish("1.3.0", 3, files=files)
    tar = story.file(doc["bundle"])
    mark = web.mark()
    board = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "sim", "boot", str(story.board), "--cycles", "1"],
        cwd=str(REPO),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        web.wait_for(lambda r: r["path"] == story.path + ".sig" and r["status"] == 200, 60)
        time.sleep(1.5)  # about 90 KiB of the bundle on its way at 64 KiB/s
    finally:
        os.killpg(board.pid, signal.SIGKILL)  # the board loses its power, mid-transfer
        board.wait()
    cut = web.wait_for(lambda r: r["path"] == tar, 10)
    assert asked(web.since(mark)) == story.poll() + [(tar, 200)]
    assert 0 < cut["body_sent"] < doc["size"], cut
    have = int(story.ls("/staging").split("channel.part")[1].split()[0])
    assert 0 < have <= cut["body_sent"], (have, cut)  # what was synced to flash before the cut
    console, log, ops = story.boot()
    assert asked(log) == story.poll() + [(tar, 206)] + story.poll(), asked(log)
    assert log[2]["range"] == "bytes=%d-" % have, log[2]
    assert log[2]["body_sent"] == doc["size"] - have, log[2]
    assert story.running(console, "1.3.0"), console
    before = {"pointer": assert_committed(story, "1.3.0", files), "files": flash_files(story)}
    assert "channel.part" not in "".join(before["files"])

    # 5. refusals, each after the channel was fetched and judged
    story.publish("1.4.0", 4, key=world["other_key"])
    console, log, ops = story.boot()
    assert asked(log)[:2] == story.poll(), asked(log)
    # then, only the look-up of a rotated update key on the operator's host (it has none)
    assert [r for r in log[2:] if not (r["path"].startswith("/ota/") and r["status"] == 404)] == []
    assert_unchanged(story, before, log, console, "bad_signature")

    story.publish("1.4.0", 2)  # signed by the right key, but below the counter floor (3)
    console, log, ops = story.boot()
    assert asked(log) == story.poll(), asked(log)
    assert_unchanged(story, before, log, console, "counter 2 below the floor")

    doc = story.publish("1.5.0", 5)
    rebuilt = dict(app_files("1.5.0"), **{"lib/helper.py": b"def twice(x):\n    return x + x\n"})
    other = story.publish("1.5.0", 5, files=rebuilt, out=world["base"] / ("other-" + scheme))
    assert other["sha256"] != doc["sha256"]  # the same name, other bytes (another build)
    shutil.copyfile(world["base"] / ("other-" + scheme) / doc["bundle"], story.out / doc["bundle"])
    console, log, ops = story.boot()
    assert asked(log) == story.poll() + [(story.file(doc["bundle"]), 200)], asked(log)
    assert_unchanged(story, before, log, console, "hash_mismatch")


def test_an_anchor_set_offered_as_the_channel_is_refused(world, capsys):
    """Typed signatures: the operator's own anchors.json and its signature (`ias bundle
    anchors`, same update key) copied over channel.json and channel.json.sig. The signature
    verifies, but the signed bytes say "anchors": the board refuses it as wrong_kind and keeps
    everything; the genuine channel then installs as usual."""
    story = Story(world, "https", capsys, name="typed")
    story.publish("1.1.0", 1)
    anchors = world["base"] / "typed-anchors"
    argv = ["bundle", "anchors", "--key", world["key"], "--version", 2]
    assert ias(*argv + ["--anchor", world["ca"], "-o", anchors]) == 0
    genuine = {n: (story.out / n).read_bytes() for n in ("channel.json", "channel.json.sig")}
    shutil.copyfile(anchors / "anchors.json", story.out / "channel.json")
    shutil.copyfile(anchors / "anchors.json.sig", story.out / "channel.json.sig")
    story.init()
    before = {"pointer": story.pointer(), "files": flash_files(story)}
    console, log, ops = story.boot()
    assert asked(log) == story.poll(), asked(log)  # no key look-up: the signature was good
    assert_unchanged(story, before, log, console, "wrong_kind")
    assert "anchors document where a channel was expected" in console, console

    for name, data in genuine.items():  # the control: the operator's real channel installs
        (story.out / name).write_bytes(data)
    console, log, ops = story.boot()
    assert story.running(console, "1.1.0"), console
