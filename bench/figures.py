"""The figures of `make bench`, each beside a baseline measured in the same run. Every function
returns a dict of raw values (and the runs behind them); bench/run.py formats them."""

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.world import REPO, World, floor_search, stats
from tools import keys as keys_mod
from tools.bundle import sign
from tools.deploy import compile_firmware

KIB = 1024


# -- 1. heap floor ----------------------------------------------------------------------------
def _client_ok(world, img):
    def ok(heap):
        run = world.fresh(img)
        args = [world.work, run, "/host/" + img.name, "update"]
        return world.run_mp("client", args, heap=heap)[0]

    return ok


def _naive_ok(world, img):
    def ok(heap):
        run = world.fresh(img)
        url = "https://localhost:%d" % world.port
        return world.run_mp("naive", [world.work, run, url, "0" * 32], heap=heap)[0]

    return ok


def _bare_ok(world):
    def ok(heap):
        args = [world.work / "root.der", world.port, "0" * 32, "body"]
        return world.run_mp("bare", args, heap=heap)[0]

    return ok


def heap_floor(world, payloads, confirm=2, only=None):
    """The smallest -X heapsize (1 KiB steps) at which each client completes, per payload: a
    bisection, then the floor is raised until `confirm` runs in a row pass there (`floor`);
    `lowest_pass` is the smallest heap that passed once; floor - 1 KiB is run `confirm` more
    times (`below_fails` of them failed)."""
    rows = []
    hint = {"client": 96 * KIB, "bare": 16 * KIB}
    for payload in payloads:
        world.bundle(payload)
        img = world.image("heap-%d" % payload, payload)
        row = {"payload": payload, "bundle": world.bundles[payload][0].stat().st_size}
        checks = {
            "client": _client_ok(world, img),
            "naive": _naive_ok(world, img),
            "bare": _bare_ok(world),
        }
        hint["naive"] = payload + 96 * KIB
        for name, ok in checks.items():
            if only is not None and name not in only:
                continue
            row[name] = stable_floor(ok, hint[name], confirm)
            hint[name] = row[name]["floor"]
        rows.append(row)
    return {"rows": rows}


def stable_floor(ok, hint, confirm):
    """floor_search, then the floor raised until `confirm` runs in a row pass there; floor - 1
    KiB is run `confirm` more times (`below_fails` of them failed)."""
    floor, tries = floor_search(ok, hint)
    lowest = min(h for h, r in tries if r)
    # Near the floor a run may pass once and fail the next time (allocation timing
    # differs with how the bytes arrive): raise it until `confirm` runs in a row pass.
    stable, extra = floor, 0
    while True:
        passes = sum(1 for _ in range(confirm) if ok(stable))
        extra += confirm
        if passes == confirm or extra >= 12 * confirm:
            break
        stable += KIB
    below = sum(1 for _ in range(confirm) if not ok(stable - KIB))
    return {
        "floor": stable,
        "lowest_pass": lowest,
        "stable": passes == confirm,
        "runs": len(tries) + extra + confirm,
        "confirm": confirm,
        "below_fails": below,
    }


# -- 1b. the whole run by deployment ------------------------------------------------------------
def romfs_floor(world, heap, confirm=2):
    """The whole-run floor of the ROMFS deployment, for each payload of `heap` (heap_floor's
    result, the .mpy deployment measured in the same run): the same client run, its modules and
    Microdot from the client's ROMFS image (tools/romfs.py, mpremote romfs build) mounted at
    /rom. The image's own bytes sit in the heap on the unix port (bench/mp/benv.py read_rom):
    `image_heap` is what they cost, `beyond` the floor without them."""
    from tools import romfs

    image = world.work / "client.romfs"
    romfs.build(str(image), target="unix")
    env = {"IAS_BENCH_ROMFS": str(image)}
    rows = []
    hint = None
    for prev in heap["rows"]:
        payload = prev["payload"]
        world.bundle(payload)
        img = world.image("romfs-%d" % payload, payload)

        def ok(heap_bytes, img=img):
            args = [world.work, world.fresh(img), "/host/" + img.name, "update"]
            return world.run_mp("client", args, heap=heap_bytes, env=env)[0]

        ok_run, recs, text = world.run_mp(
            "client", [world.work, world.fresh(img), "/host/" + img.name, "update"], env=env
        )
        if not ok_run:
            raise RuntimeError("client update from ROMFS failed:\n" + text)
        cost = [r for r in recs if r["kind"] == "romfs"][0]
        if hint is None:
            hint = cost["heap_bytes"] + prev["client"]["floor"] // 2
        cell = stable_floor(ok, hint, confirm)
        hint = cell["floor"]
        cell["image_bytes"] = cost["image_bytes"]
        cell["image_heap"] = cost["heap_bytes"]
        cell["beyond"] = cell["floor"] - cost["heap_bytes"]
        rows.append({"payload": payload, "mpy": prev["client"], "romfs": cell})
    return {"rows": rows}


# -- 2. throughput ----------------------------------------------------------------------------
def throughput(world, payload, runs=3):
    """MB/s of one update (call home, download unpacked as it arrives, signature, switch)
    against the bare verified TLS stream writing the same body to a littlefs file on the same
    flash."""
    world.bundle(payload)
    img = world.image("tp-%d" % payload, payload)
    ours, phases, bare = [], [], []
    for _ in range(runs):
        ok, recs, text = world.run_mp(
            "client", [world.work, world.fresh(img), "/host/" + img.name, "timed"]
        )
        if not ok:
            raise RuntimeError("client update failed:\n" + text)
        heap_ready = recs[-1]["heap_ready"]
        ours.append(recs[-1]["us"])
        phases.append(recs[-1]["phases"])
        args = [
            world.work / "root.der",
            world.port,
            "0" * 32,
            "sink",
            world.work,
            world.fresh(img),
        ]
        ok, recs, text = world.run_mp("bare", args)
        if not ok:
            raise RuntimeError("bare stream failed:\n" + text)
        bare.append(recs[-1]["us"])
    size = world.bundles[payload][0].stat().st_size
    down = [p["finish"] for p in phases]
    after = [p["done"] - p["finish"] for p in phases]
    return {
        "payload": size,
        "heap_ready": heap_ready,
        "ours_us": stats(ours),
        "bare_us": stats(bare),
        "download_us": stats(down),
        "finish_us": stats(after),
        "ours_mbs": size / stats(ours)["median"],
        "bare_mbs": size / stats(bare)["median"],
        "download_mbs": size / stats(down)["median"],
        "ratio": stats(bare)["median"] / stats(ours)["median"],
        "download_ratio": stats(bare)["median"] / stats(down)["median"],
    }


# -- 3. the no-update call home ---------------------------------------------------------------
def no_update(world, calls=6):
    """`calls` call homes answered 304 in one process (the first is cold: lazy imports), through
    a byte-counting relay; the baseline is the bare verified TLS GET answered 304."""
    from bench.world import WireCounter

    payload = 64 * KIB
    _, md5 = world.bundle(payload)
    wire = WireCounter(world.port)
    try:
        # a device that called home an hour ago: its time floor is today's (timefloor.py
        # persists the floor at most once a day, on the first verified answer of a day)
        floor = {"time_floor": int(time.time()) - 3600}
        img = world.image("noupd", payload, installed_md5=md5, port=wire.port, state=floor)
        wire.reset()
        ok, recs, text = world.run_mp(
            "client", [world.work, world.fresh(img), "/host/" + img.name, "noupdate", calls]
        )
        if not ok:
            raise RuntimeError("no-update call home failed:\n" + text)
        ours = {"sent": wire.sent, "received": wire.received, "conns": wire.conns}
        wire.reset()
        ok, brecs, text = world.run_mp(
            "bare", [world.work / "root.der", wire.port, md5, "get", "-", "-", calls]
        )
        if not ok or any(r["status"] != 304 for r in brecs):
            raise RuntimeError("bare GET failed:\n" + text)
        bare = {"sent": wire.sent, "received": wire.received, "conns": wire.conns}
    finally:
        wire.close()
    warm = [r["us"] for r in recs[1:]]
    bwarm = [r["us"] for r in brecs[1:]]
    return {
        "calls": calls,
        "ours_cold_us": recs[0]["us"],
        "bare_cold_us": brecs[0]["us"],
        "ours_us": stats(warm),
        "bare_us": stats(bwarm),
        "ratio": stats(warm)["median"] / stats(bwarm)["median"],
        "programs": [r["programs"] for r in recs],
        "erases": [r["erases"] for r in recs],
        "ours_wire": {k: v / calls if k != "conns" else v for k, v in ours.items()},
        "bare_wire": {k: v / calls if k != "conns" else v for k, v in bare.items()},
    }


# -- 4 and 5. boot overhead and footprint ------------------------------------------------------
def _sim_board(world):
    folder = world.work / "sim"
    cmd = [
        str(REPO / ".venv" / "bin" / "python"),
        "-m",
        "tools.cli",
        "sim",
        "init",
        str(folder),
        "--server",
        "https://localhost:%d" % world.port,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=300)
    if proc.returncode != 0:
        raise RuntimeError("ias sim init failed: %s%s" % (proc.stdout, proc.stderr))
    return folder


def boot(world, runs=5):
    folder = _sim_board(world)
    ours, ours_boot, bare = [], [], []
    rec = brec = None
    for _ in range(runs):
        ok, recs, text = world.run_mp("boottime", [folder, "client"])
        if not ok:
            raise RuntimeError("boot failed:\n" + text)
        rec = recs[-1]
        ours.append(rec["total_us"])
        ours_boot.append(rec["boot_us"])
        ok, recs, text = world.run_mp("boottime", [folder, "bare"])
        if not ok:
            raise RuntimeError("bare boot failed:\n" + text)
        brec = recs[-1]
        bare.append(brec["total_us"])
    return {
        "ours_us": stats(ours),
        "boot_py_us": stats(ours_boot),
        "bare_us": stats(bare),
        "last": rec,
        "bare_last": brec,
        "folder": folder,
    }


def footprint(world, boot_result):
    """Total .mpy bytes of the client for an ESP32, and the heap the boot path's imports hold."""
    with tempfile.TemporaryDirectory(prefix="bench-esp32-") as tmp:
        written = compile_firmware(tmp, target="esp32")
        sizes = {}
        for path in written:
            if path.endswith(".mpy") or path in ("/boot.py", "/main.py"):
                sizes[path] = os.path.getsize(tmp + path)
    rec = boot_result["last"]
    lib = set(n[:-4] for n in os.listdir(world.work / "fw" / "lib" / "ias"))
    mods = [m[4:] for m in rec["modules"] if m.startswith("ias.") and m[4:] in lib]
    # and what a call home with an install imports on top (lazily)
    extra = [m for m in ("callhome", "httpclient", "appbundle", "trust", "tarstream") if m in lib]
    # and the other phases' modules: anchors, channel, config mode
    later = ("anchors", "certadmin", "channel", "configmode", "webapp")
    others = [m for m in later if m in lib]
    per = {}
    # each module alone in a fresh process (its own imports included)
    for m in mods + extra + others:
        ok, recs, text = world.run_mp("boottime", [boot_result["folder"], "mods", m])
        if ok:
            per[m] = recs[-1]["heap_after"] - recs[-1]["heap_mounted"]
    brec = boot_result["bare_last"]
    return {
        "mpy_total": sum(sizes.values()),
        "files": len(sizes),
        "largest": sorted(sizes.items(), key=lambda kv: -kv[1])[:6],
        "heap_boot": rec["heap_after"] - rec["heap_mounted"],
        "heap_bare": brec["heap_after"] - brec["heap_mounted"],
        "boot_modules": mods,
        "per_module": sorted(per.items(), key=lambda kv: -kv[1]),
        "boot_flash_ops": rec["programs"] + rec["erases"],
        "callhome_modules": extra,
        "phase_modules": others,
    }


# -- 6. signature verification ----------------------------------------------------------------
def signatures(world, runs=30, bits=(2048, 3072)):
    folder = world.work / "sig"
    folder.mkdir(exist_ok=True)
    path, _ = world.bundle(64 * KIB)
    import tarfile

    with tarfile.open(path) as tar:
        raw = tar.extractfile("manifest.json").read()
    (folder / "manifest.json").write_bytes(raw)
    for b in bits:
        key = keys_mod.new_key(b)
        (folder / ("pub%d.pem" % b)).write_bytes(keys_mod.public_pem(key))
        (folder / ("sig%d" % b)).write_bytes(sign(key, raw))
    ok, recs, text = world.run_mp("sigtime", [folder, runs] + list(bits))
    if not ok:
        raise RuntimeError("sigtime failed:\n" + text)
    return {
        "runs": runs,
        "manifest_bytes": len(raw),
        "rows": [
            {
                "bits": r["bits"],
                "check": stats(r["check"]),
                "pow": stats(r["pow"]),
                "sha": stats(r["sha"]),
                "sqm": stats(r["sqm"]),
                "check_sqm": stats(r["check_sqm"]),
            }
            for r in recs
        ],
    }


def new_world(tmp):
    return World(Path(tmp)).setup()


def dump(obj):
    return json.dumps(obj, default=str, indent=1)


# -- 1c. the peak of each phase ------------------------------------------------------------------
PHASES = ("boot", "call home", "install", "anchors", "channel", "config mode")


def _phase_anchors(world):
    """A signed anchor set (the server's root and one more) served at /ota/anchors/, and a CA
    expiring in 100 days for the device's store: its earliest expiry is within the refresh
    horizon, so after the call home the anchor policy walks the ladder and takes the set."""
    from tools import anchorbundle, pki

    soon = pki.make_ca("Bench Soon Root", not_after=100)
    out = world.work / "anchors"
    root = (world.work / "root.pem").read_bytes()
    anchorbundle.build_anchor_bundle(
        world.key_path.read_bytes(), 1, [root.decode(), soon.pem.decode()], out_dir=out
    )
    world.server.anchors = out
    return [("soonRoot.cer", soon.pem)]


def _phase_channel(world, payload):
    """The bench's app published as a signed static channel (tools/publish.py) in a folder."""
    from tools import publish

    src = world.work / ("chsrc-%d" % payload)
    src.mkdir(exist_ok=True)
    (src / "app.py").write_text("def setup(app):\n    pass\n")
    (src / "data.bin").write_bytes(os.urandom(max(payload - 4608, 1)))
    out = world.work / "channel"
    publish.publish(src, world.key, "BenchApp", "2.0", out, counter=1, poll=600)
    return out


def phases(world, install, payload=64 * KIB, confirm=2):
    """The peak heap of each phase: the floor (as section 1, same machinery) of a run that goes
    through that phase: boot (boot.py, Device.open(), the app started: bench/mp/boottime.py on
    an `ias sim init` board), call home (one IAS call answered 304), install (section 1's whole
    run, `install`: its floor cell for `payload`), anchors (a 304 call home whose after-call
    anchor refresh fetches, verifies and takes a signed anchor set over verified TLS), channel
    (a poll of a signed static channel on plain HTTP that installs the bundle), config mode
    (bench/config_phase.py: a virtual ESP32 booted into config mode serves its page and previews
    a signed anchor set, then exits). Each run mounts the flash and builds its Device first, as
    the whole run does."""
    sys_path = str(REPO / "tests")
    import sys

    if sys_path not in sys.path:
        sys.path.insert(0, sys_path)
    from statichost import StaticHost

    _, md5 = world.bundle(payload)
    cells = {"install": install}
    folder = world.work / "sim"
    if not folder.exists():
        folder = _sim_board(world)

    def runs(script, args_of):
        def ok(heap):
            return world.run_mp(script, args_of(), heap=heap)[0]

        return ok

    def client(img, mode):
        return runs("client", lambda: [world.work, world.fresh(img), "/host/" + img.name, mode])

    cells["boot"] = stable_floor(runs("boottime", lambda: [folder, "client"]), 48 * KIB, confirm)
    img = world.image("ph-304", payload, installed_md5=md5)
    cells["call home"] = stable_floor(client(img, "noupdate"), 96 * KIB, confirm)
    img = world.image("ph-anchors", payload, installed_md5=md5, certs=_phase_anchors(world))
    ok, _, text = world.run_mp(
        "client", [world.work, world.fresh(img), "/host/" + img.name, "anchors"]
    )
    if not ok:
        raise RuntimeError("anchors phase failed:\n" + text)
    cells["anchors"] = stable_floor(client(img, "anchors"), 128 * KIB, confirm)
    with StaticHost(_phase_channel(world, payload)) as host:
        img = world.image("ph-channel", payload, settings={"channel": host.url("/channel.json")})
        ok, _, text = world.run_mp(
            "client", [world.work, world.fresh(img), "/host/" + img.name, "update"]
        )
        if not ok:
            raise RuntimeError("channel phase failed:\n" + text)
        cells["channel"] = stable_floor(client(img, "update"), 128 * KIB, confirm)
    from bench import config_phase

    run = config_phase.ConfigRun(world.work / "config")
    try:
        cells["config mode"] = stable_floor(run.ok, 320 * KIB, confirm)
    finally:
        run.close()
    return {"payload": payload, "cells": cells}
