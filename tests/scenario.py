"""Scenario worlds for the end-to-end acceptance tests (issues 5 and 6).

A World is one operator and one device: a work folder, the update-signing key pair, an
in-process `ias serve` (tools/server.UpdateServer) with real TLS on loopback and a plain-HTTP
port, and a virtual ESP32 (tools/sim) that trusts the roots the test names. It reuses the demo's
helpers (tools/demo.py) for publishing, booting and reading the device's files, and adds what the
scenarios need to prove that a refusal changed nothing: `snapshot()` and `assert_unchanged()`.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools import anchorbundle, demo, keys, pki, sim
from tools.server import UpdateServer

APP = demo.APP
FACTORY_VERSION = "1.0"


@dataclass
class Chain:
    """A CA family: root <- intermediate <- leaf for 127.0.0.1 and localhost."""

    root: pki.Issued
    inter: pki.Issued
    leaf: pki.Issued


def make_chain(name, root=None, root_days=(-1, 3650)):
    """A chain under a new root "Root <name>" (validity in days relative to now: negative
    values make an expired root), or under `root` when given (a new intermediate)."""
    org = "CA family %s" % name
    if root is None:
        root = pki.make_ca(
            "Root %s" % name, org=org, not_before=root_days[0], not_after=root_days[1]
        )
    inter = pki.make_ca("Intermediate %s" % name, org=org, issuer=root, not_after=1825)
    return Chain(root, inter, pki.make_leaf(inter))


class World:
    """One operator, one server, one virtual ESP32. `trust`: the roots the device ships with
    (pki.Issued; the first is iasRootCa.cer); `serve`: the Chain the server presents;
    `recovery`: "both" (https then http rung of the server), "http", "https" or "none";
    `romfs`: the client runs from a ROMFS image (`ias sim init --romfs`), not from /lib."""

    def __init__(
        self,
        work,
        trust,
        serve,
        recovery="both",
        interval=7200,
        stage_cache=None,
        config_port=None,
        romfs=False,
    ):
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.key_path, self.pub_path = keys.write_pair(self.work / "keys", bits=2048)
        self.key = keys.load_private(self.key_path)
        self.anchors_dir = self.work / "anchors"
        self.anchors_dir.mkdir()
        self.server = UpdateServer(
            artifacts=self.work / "artifacts", anchors=self.anchors_dir, plain_port=0
        )
        self.serve(serve)
        self.server.start()
        self.board = self.work / "esp32"
        pems = []
        for i, root in enumerate(trust):
            path = self.work / ("trusted-%d.pem" % i)
            path.write_bytes(root.pem)
            pems.append(str(path))
        rungs = {
            "both": [self.https_rung, self.http_rung],
            "http": [self.http_rung],
            "https": [self.https_rung],
            "none": [],
        }[recovery]
        # "none": a location that answers 404, so the ladder has nowhere to go
        if not rungs:
            rungs = ["http://127.0.0.1:%d/nowhere/" % self.server.plain_port]
        with pytest.MonkeyPatch.context() as mp:
            if stage_cache is not None:
                mp.setattr(sim, "stage_firmware", _cached_stage(stage_cache))
            self._init(pems, rungs, interval, config_port, romfs)

    def _init(self, pems, rungs, interval, config_port, romfs=False):
        args = sim.args_for(
            "init",
            self.board,
            server=self.url,
            anchor=pems,
            app_name=APP,
            app_version=FACTORY_VERSION,
            update_key=str(self.pub_path),
            recovery=rungs,
            interval=interval,
            force=True,
            romfs=romfs,
        )
        if config_port is not None:
            args.config_port = config_port
        sim.init(args)

    # -- the operator's side -----------------------------------------------------------------
    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.server.port

    @property
    def https_rung(self):
        return "%s/ota/anchors/" % self.url

    @property
    def http_rung(self):
        return "http://127.0.0.1:%d/ota/anchors/" % self.server.plain_port

    def serve(self, chain):
        """The server presents this chain from the next connection on."""
        self.server.use_chain(chain.leaf, [chain.inter])

    def publish(self, version, counter, broken=False, key=None):
        """A signed bundle becomes the current artifact; returns its path on the server."""
        demo.publish(self.work, key or self.key, version, counter, broken)
        return self.artifact_path(version)

    def artifact_path(self, version):
        return self.work / "artifacts" / APP / ("%s-%s.tar.gz" % (APP, version))

    def sign_anchors(self, version, roots, key_pem=None, expires=None, hosts=("127.0.0.1",)):
        """anchors.json + .sig in the server's /ota/anchors/ (signed by the update key unless
        another private key PEM is given)."""
        return anchorbundle.build_anchor_bundle(
            key_pem or self.key_path.read_bytes(),
            version,
            [r.pem for r in roots],
            expires=expires,
            hosts=hosts,
            out_dir=self.anchors_dir,
        )

    def mark(self):
        """A position in the server's request log, for requests(since=...)."""
        return len(self.server.requests)

    def requests(self, since=0, path=None):
        out = self.server.requests[since:]
        if path is not None:
            out = [r for r in out if r.get("path", "").split("?", 1)[0] == path]
        return out

    def header(self, name, since=0):
        """The last value of header `name` the device sent after `since`, or None."""
        for rec in reversed(self.requests(since)):
            for key, value in rec.get("headers", ()):
                if key.lower() == name.lower():
                    return value
        return None

    def close(self):
        self.server.stop()

    # -- the device's side -------------------------------------------------------------------
    def boot(self, cycles):
        """Power on and run across resets until `cycles` main-loop cycles in all (the board
        then powers off: the next boot is a power-on)."""
        return demo.boot(self.board, cycles, True)

    def callhome(self):
        """One forced call home (a short button press); its result dict."""
        run = sim.run_board(self.board, "callhome", echo=False)
        assert run.result is not None, run.output
        return run.result

    def pointer(self):
        return demo.app_pointer(self.board)

    def state(self):
        return demo.device_state(self.board)

    def settings(self):
        return json.loads(demo.device_file(self.board, "/settings.json"))

    def listing(self, path="/"):
        """{path: size} of every file under `path` on the flash."""
        run = sim.run_board(self.board, "ls", path, echo=False)
        assert run.code == 0, run.output
        out, stack = {}, []
        for line in run.output.splitlines():
            depth = (len(line) - len(line.lstrip(" "))) // 2
            entry = line.strip()
            del stack[depth:]
            if entry.endswith("/"):
                stack.append(entry[:-1])
                continue
            name, _, size = entry.rpartition("  ")
            out["/".join([path.rstrip("/")] + stack + [name])] = int(size)
        return out

    def anchor_files(self):
        """Names of the anchors in /cert (the .cer files)."""
        return sorted(Path(p).name for p in self.listing("/cert") if p.endswith(".cer"))

    def console(self):
        return (self.board / "console.log").read_text(errors="replace")

    def snapshot(self):
        """What a refusal must leave alone: the slot pointer, every file on the flash (name and
        size; state.json is compared by content), settings and state."""
        tree = self.listing("/")
        tree.pop("/state.json", None)
        for log in ("/log.txt", "/log.1"):  # the log records refusals too: it is meant to grow
            tree.pop(log, None)
        return {
            "app": self.pointer(),
            "tree": tree,
            "settings": self.settings(),
            "state": self.state(),
        }


def assert_unchanged(before, after, volatile=(), inactive_slot=False):
    """Everything equal, except state keys in `volatile` (what the device keeps to report the
    incident on its next call home, or the time of its last ladder walk). `inactive_slot`: an
    install began, and begin() clears the slot that is not running (docs/installing.md: the
    version before the committed one); its files may be gone, never new or changed."""
    assert after["app"] == before["app"]
    skip = ()
    if inactive_slot:
        active = before["app"].get("active", "slot_a")
        skip = "/%s/" % ("slot_b" if active == "slot_a" else "slot_a")
        left = {p: n for p, n in after["tree"].items() if p.startswith(skip)}
        assert all(before["tree"].get(p) == n for p, n in left.items()), left
        skip = (skip,)
    tree_after = {p: n for p, n in after["tree"].items() if not p.startswith(skip)}
    tree_before = {p: n for p, n in before["tree"].items() if not p.startswith(skip)}
    assert tree_after == tree_before
    assert after["settings"] == before["settings"]
    kept = {k: v for k, v in before["state"].items() if k not in volatile}
    now = {k: v for k, v in after["state"].items() if k not in volatile}
    assert now == kept


def _cached_stage(cache):
    """sim.stage_firmware that compiles the firmware once per test session and copies it after
    (compiling is most of the cost of a world; the firmware does not change during a run)."""
    real = sim.stage_firmware

    def stage(dest, chip, romfs_image=None):
        if romfs_image:  # the image is built each time (its own compile)
            return real(dest, chip, romfs_image)
        src = Path(cache) / chip
        if not src.is_dir():
            real(src, chip)
        shutil.copytree(src, dest, dirs_exist_ok=True)

    return stage


def assert_settings_kept(before, after, pointer, version):
    """After a commit: the slot pointer, the one home of the installed version, names
    `version`; settings are not written (app_name/app_version still name the factory app).
    Keys `ias sim init` left out may appear with their (empty) defaults."""
    assert pointer["version"] == version and "trial" not in pointer, pointer
    assert {k: after.get(k) for k in before} == before
    extra = {k: v for k, v in after.items() if k not in before}
    assert not any(extra.values()), extra


@pytest.fixture(scope="session")
def staged_firmware(tmp_path_factory):
    return tmp_path_factory.mktemp("staged-firmware")


@pytest.fixture
def make_world(tmp_path, staged_firmware):
    """make_world(trust=[roots], serve=Chain, ...) -> World; servers stop after the test."""
    worlds = []

    def make(**kw):
        kw.setdefault("stage_cache", staged_firmware)
        w = World(tmp_path / ("world%d" % len(worlds)), **kw)
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        w.close()
