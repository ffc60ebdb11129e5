"""`make bench`: every figure beside a baseline measured in the same run, printed as a table and
written to bench/results.md (docs/benchmarks.md says what each figure means).

    python -m bench.run                 the full run (a few minutes)
    python -m bench.run --quick         tiny sizes and one run each (the smoke test uses it)
    python -m bench.run --out FILE      write the report elsewhere
    python -m bench.run --floor 64      only the whole-run floor of ours for one payload (KiB),
                                        .mpy and ROMFS, one confirming run (a diet's quick check)
"""

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench import channel_resume, figures
from bench.world import micropython

KIB = 1024
MIB = 1024 * 1024
OUT = Path(__file__).resolve().parent / "results.md"
TARGETS = {
    "floor": 64 * KIB,
    "throughput": 0.9,  # issue 16 (was 0.7)
    "noupdate": 1.2,
    "boot_ms": 50,
    "sig_ms": 5,
}
ISSUE_NAIVE = {64 * KIB: 75, MIB: 1046, 4 * MIB: 4154}  # KiB, as reported in issue 9


def _ms(us):
    return us / 1000.0


def _spread(s, scale=_ms, fmt="%.1f"):
    return (fmt + " (" + fmt + "-" + fmt + ", n=%d)") % (
        scale(s["median"]),
        scale(s["min"]),
        scale(s["max"]),
        s["n"],
    )


def _floor(x):
    text = "%d KiB [%d]" % (x["floor"] // KIB, x["lowest_pass"] // KIB)
    return text if x["stable"] else text + " unstable"


def _verdict(ok):
    return "met" if ok else "MISSED"


def _size(n):
    return "%d MiB" % (n // MIB) if n >= MIB else "%d KiB" % (n // KIB)


class Report:
    def __init__(self):
        self.lines = []

    def add(self, text=""):
        self.lines.append(text)
        print(text)

    def table(self, head, rows):
        self.add("| " + " | ".join(head) + " |")
        self.add("|" + "---|" * len(head))
        for r in rows:
            self.add("| " + " | ".join(str(c) for c in r) + " |")
        self.add()


def heap_section(rep, res):
    rep.add("## 1. Heap floor (smallest `-X heapsize`, 1 KiB steps)")
    rep.add()
    rep.add(
        "One complete call home plus bundle install (ours), a `requests` `.content` updater "
        "(naive) and a bare verified TLS read into one 4 KiB buffer with SHA-256 (bare). "
        "Firmware and scripts as .mpy, imports included. Each cell: the floor where %d runs in "
        "a row passed, and in brackets the lowest heap that passed once during the search "
        "(the spread near the floor). `runs`: all runs behind the cell."
        % res["rows"][0]["client"]["confirm"]
    )
    rep.add()
    rows = []
    for r in res["rows"]:
        c, n, b = r["client"], r["naive"], r["bare"]
        issue = ISSUE_NAIVE.get(r["payload"])
        rows.append(
            [
                "%s (%d B)" % (_size(r["payload"]), r["bundle"]),
                _floor(c),
                _floor(n) + (" (issue: ~%d)" % issue if issue else ""),
                _floor(b),
                "%d/%d/%d" % (c["runs"], n["runs"], b["runs"]),
                " ".join("%d/%d" % (x["below_fails"], x["confirm"]) for x in (c, n, b)),
                "%s (%+d KiB)"
                % (
                    _verdict(c["floor"] <= TARGETS["floor"]),
                    (c["floor"] - TARGETS["floor"]) // KIB,
                ),
            ]
        )
    rep.table(
        [
            "payload",
            "ours",
            "naive",
            "bare",
            "runs ours/naive/bare",
            "floor - 1 KiB failed (ours naive bare)",
            "ours <= 64 KiB",
        ],
        rows,
    )
    floors = [r["client"]["floor"] for r in res["rows"]]
    rep.add(
        "Our floor across payloads: %d to %d KiB (flat within %d KiB)."
        % (min(floors) // KIB, max(floors) // KIB, (max(floors) - min(floors)) // KIB)
    )
    rep.add()


# The whole run by deployment (issue 16): each floor on the 64-bit unix port, its 32-bit
# equivalent and each chip's budget for the client (design §2, 32-bit KB, compared as KiB).
BITS32 = 0.70  # 32-bit heap figures are about 0.70x the 64-bit ones (micropython-facts §8.6)
BUDGETS = (("ESP32 (half of 112 KB)", 56), ("ESP8266 (36 KB, axTLS included)", 36))
GOALS = {".mpy": 80, "ROMFS": 48}  # KiB, 64-bit: the whole run (ROMFS: beyond the image)


def _budget_cell(kib32, budget):
    return "%s (%+.0f)" % (_verdict(kib32 <= budget), kib32 - budget)


def deployment_section(rep, res):
    rep.add("## 1b. Whole-run heap floor by deployment")
    rep.add()
    rep.add(
        "The run of section 1 (ours), its client loaded two ways: `.mpy` files from a "
        "filesystem (the `.mpy` floors of section 1, same run) and a ROMFS image of the same "
        "`.mpy` files (`tools/romfs.py`, `mpremote romfs build`) mounted with `vfs.VfsRom` at "
        "/rom, bytecode run in place. On a chip the image is mapped from flash; the unix port "
        "holds it in a bytes object in the heap, read first into the empty heap, so its cost "
        "(`gc.mem_alloc` before and after the read) is subtracted: `beyond the image`. The "
        "heap's own allocation tables for those bytes (about 2.3%%) are not subtracted, so that "
        "figure is an upper bound. 32-bit: x%.2f (measured ratio for this client, stated, not "
        "run). Budgets are the client's share on each chip, 32-bit." % BITS32
    )
    rep.add()
    rows = []
    for r in res["rows"]:
        m, ro = r["mpy"], r["romfs"]
        for name, kib, note in (
            (".mpy", m["floor"] / KIB, _floor(m)),
            (
                "ROMFS",
                ro["beyond"] / KIB,
                "%.0f KiB beyond the image (%s with it; image %d B, %d B of heap)"
                % (ro["beyond"] / KIB, _floor(ro), ro["image_bytes"], ro["image_heap"]),
            ),
        ):
            kib32 = kib * BITS32
            rows.append(
                [name, _size(r["payload"]), note, "%.0f KiB" % kib32]
                + [_budget_cell(kib32, b) for _, b in BUDGETS]
                + ["%s (%+.0f KiB)" % (_verdict(kib <= GOALS[name]), kib - GOALS[name])]
            )
    rep.table(
        ["deployment", "payload", "floor, 64-bit", "32-bit (x%.2f)" % BITS32]
        + [n for n, _ in BUDGETS]
        + ["goal: .mpy <= %d KiB, ROMFS <= %d KiB" % (GOALS[".mpy"], GOALS["ROMFS"])],
        rows,
    )


def phase_section(rep, res):
    rep.add("## 1c. Peak heap of each phase (.mpy deployment, %s bundle)" % _size(res["payload"]))
    rep.add()
    rep.add(
        "Each phase's peak is the floor (section 1's search, 1 KiB steps) of a run that goes "
        "through it: boot (boot.py, Device.open(), the app started, on an `ias sim init` "
        "board), call home (one IAS call answered 304), install (the whole run of section 1), "
        "anchors (a 304 call home whose after-call refresh fetches, verifies and takes a signed "
        "anchor set over verified TLS), channel (a poll of a signed static channel on plain "
        "HTTP that installs the bundle), config mode (bench/config_phase.py: a virtual ESP32 "
        "booted from its flash with the button held serves its page, previews the signed "
        "anchor set 'Get IAS root cert' fetches over verified TLS, exits, then boots and calls "
        "home: the larger of those). Boot runs on an `ias sim init` board's flash "
        "(bench/mp/boottime.py); config mode on the whole virtual board, so its figure also "
        "holds the launcher and the NOR and bootloader models (tools/vboard, compiled from "
        "source); the others mount the flash and build their Device first. Phases load their "
        "modules when they start and release them when they end (firmware/phase.py), so the "
        "whole run's peak is the largest phase, not their sum."
    )
    rep.add()
    rows = []
    for name in figures.PHASES:
        c = res["cells"][name]
        kib = c["floor"] / KIB
        rows.append(
            [name, _floor(c), "%.0f KiB" % (kib * BITS32)]
            + [_budget_cell(kib * BITS32, b) for _, b in BUDGETS]
        )
    rep.table(
        ["phase", "peak (floor), 64-bit", "32-bit (x%.2f)" % BITS32] + [n for n, _ in BUDGETS],
        rows,
    )


def goals_section(rep, raw):
    """Issue 16's goals, each met or missed by how much, and what would close a miss."""
    rep.add("## 0. Issue 16 goals")
    rep.add()
    dep = raw["deploy"]["rows"]
    mpy = [r["mpy"]["floor"] / KIB for r in dep]
    rom = [r["romfs"]["beyond"] / KIB for r in dep]
    tp = raw["throughput"]["ratio"]
    ph = raw["phases"]["cells"]
    big = max(("boot", "call home", "install"), key=lambda n: ph[n]["floor"])
    top = max(figures.PHASES, key=lambda n: ph[n]["floor"])
    rows = [
        [
            ".mpy whole run <= %d KiB (64-bit), flat with payload" % GOALS[".mpy"],
            "%.0f-%.0f KiB (flat within %.0f)" % (min(mpy), max(mpy), max(mpy) - min(mpy)),
            _miss(max(mpy), GOALS[".mpy"]),
            "the largest phase is %s (%d KiB); bytecode loaded from .mpy is about a third of "
            "it (the ROMFS row runs the same code from the image): freezing the client "
            "(manifest.py) or ROMFS removes that part; beyond, fewer and smaller modules "
            "(every module costs its qstrs, functions and dict for good)"
            % (big, ph[big]["floor"] // KIB),
        ],
        [
            "ROMFS whole run <= %d KiB beyond the image (64-bit)" % GOALS["ROMFS"],
            "%.0f-%.0f KiB" % (min(rom), max(rom)),
            _miss(max(rom), GOALS["ROMFS"]),
            "qstrs of every loaded module stay interned (about 20 KiB for the install phase's "
            "modules), then function objects, module and class dicts: fewer modules and names "
            "on the install path, or freezing (qstrs and code in the firmware)",
        ],
        [
            "update throughput >= %.1f of the bare verified stream" % TARGETS["throughput"],
            "%.2f" % tp,
            "met"
            if tp >= TARGETS["throughput"]
            else "MISSED by %.2f" % (TARGETS["throughput"] - tp),
            "section 2; both runs share the littlefs/NOR sink and the 2 busy cores, so the "
            "ratio moves by about 0.1 between runs",
        ],
        [
            "(not a goal) the largest phase of all",
            "%s: %d KiB (32-bit ~%.0f KB)"
            % (top, ph[top]["floor"] // KIB, ph[top]["floor"] / KIB * BITS32),
            "section 1c",
            "config mode holds Microdot, the web app and its guard, and for 'Get IAS root "
            "cert' the anchor ladder over verified TLS, all at once: releasing the ladder's "
            "modules after the preview and a smaller web stack would bring it down",
        ],
        [
            "no regression: 304 call home, boot, signature",
            "304 %.2f x bare; boot %.1f ms; RSA-3072 check %.2f ms"
            % (
                raw["noupdate"]["ratio"],
                raw["boot"]["ours_us"]["median"] / 1000.0,
                [r for r in raw["sig"]["rows"] if r["bits"] == 3072][0]["check"]["median"]
                / 1000.0,
            ),
            "see sections 3, 4, 6",
            "",
        ],
    ]
    rep.table(["goal", "measured", "verdict", "what would close it"], rows)


def _miss(value, goal):
    return "met" if value <= goal else "MISSED by %.0f KiB" % (value - goal)


def throughput_section(rep, res):
    rep.add("## 2. Throughput of an update over loopback TLS (%d B bundle)" % res["payload"])
    rep.add()
    rep.table(
        [
            "what",
            "time ms median (min-max, n)",
            "MB/s",
            "ratio bare/ours",
            "target >= %.1f" % TARGETS["throughput"],
        ],
        [
            [
                "ours: call home + download, unpacked as it arrives (signature first) + switch",
                _spread(res["ours_us"]),
                "%.2f" % res["ours_mbs"],
                "%.2f" % res["ratio"],
                _verdict(res["ratio"] >= TARGETS["throughput"]),
            ],
            [
                "ours, download phase only (connect to finish())",
                _spread(res["download_us"]),
                "%.2f" % res["download_mbs"],
                "%.2f" % res["download_ratio"],
                _verdict(res["download_ratio"] >= TARGETS["throughput"]),
            ],
            [
                "ours, finish() (a plain bundle: nothing left)",
                _spread(res["finish_us"]),
                "",
                "",
                "",
            ],
            [
                "bare: verified TLS, 4 KiB buffer, SHA-256, same littlefs/NOR sink",
                _spread(res["bare_us"]),
                "%.2f" % res["bare_mbs"],
                "1",
                "",
            ],
        ],
    )


def _heap_ready_note(rep, res):
    rep.add(
        "Live heap of our client with the Device built, before the call home (boot imports, "
        "settings, state, trust store, mounted littlefs): %d bytes." % res["heap_ready"]
    )
    rep.add()


def noupdate_section(rep, res):
    rep.add("## 3. The no-update call home (304)")
    rep.add()
    ow, bw = res["ours_wire"], res["bare_wire"]
    rep.table(
        [
            "what",
            "warm ms median (min-max, n)",
            "cold ms",
            "bytes sent",
            "bytes received",
            "flash program/erase",
        ],
        [
            [
                "ours: Device.call_home() (304)",
                _spread(res["ours_us"]),
                "%.1f" % _ms(res["ours_cold_us"]),
                "%d" % ow["sent"],
                "%d" % ow["received"],
                "%d/%d" % (sum(res["programs"]), sum(res["erases"])),
            ],
            [
                "bare: minimal verified TLS GET (304)",
                _spread(res["bare_us"]),
                "%.1f" % _ms(res["bare_cold_us"]),
                "%d" % bw["sent"],
                "%d" % bw["received"],
                "-",
            ],
        ],
    )
    rep.add(
        "Ratio ours/bare (warm medians): %.2f, target <= 1.2: %s. Flash writes over %d calls: "
        "%d programs, %d erases, target 0: %s. Bytes are TLS bytes on the wire per call "
        "(handshake included), counted by a relay; connections per %d calls: ours %d, bare %d. "
        "The device called home an hour before (its time floor is today's): the first verified "
        "answer of a new day persists the floor once (timefloor.WRITE_STEP_S)."
        % (
            res["ratio"],
            _verdict(res["ratio"] <= TARGETS["noupdate"]),
            res["calls"],
            sum(res["programs"]),
            sum(res["erases"]),
            _verdict(sum(res["programs"]) + sum(res["erases"]) == 0),
            res["calls"],
            ow["conns"],
            bw["conns"],
        )
    )
    rep.add()


def boot_section(rep, res):
    rep.add("## 4. Boot overhead (boot.py start to the app started, no button held)")
    rep.add()
    med = _ms(res["ours_us"]["median"])
    rep.table(
        ["what", "ms median (min-max, n)", "target <= 50 ms"],
        [
            [
                "ours: boot.py + Device.open() + start_app()",
                _spread(res["ours_us"]),
                _verdict(med <= TARGETS["boot_ms"]),
            ],
            ["ours: boot.py (bootflow.run) alone", _spread(res["boot_py_us"]), ""],
            ["bare: main.py that imports the app", _spread(res["bare_us"]), ""],
        ],
    )


def footprint_section(rep, res):
    rep.add("## 5. Footprint")
    rep.add()
    rep.add(
        'Client for an ESP32 (`compile_firmware(target="esp32")`): %d files, %d bytes '
        "(.mpy plus boot.py and main.py). Largest: %s."
        % (
            res["files"],
            res["mpy_total"],
            ", ".join("%s %d" % (p.rsplit("/", 1)[1], n) for p, n in res["largest"]),
        )
    )
    rep.add()
    rep.add(
        "Python heap in use after a normal boot's imports (gc.mem_alloc after collection, "
        "unix port, 64-bit): ours %d bytes (%s), baseline (the app imported directly) %d bytes. "
        "Flash writes during boot: %d."
        % (
            res["heap_boot"],
            ", ".join(res["boot_modules"]),
            res["heap_bare"],
            res["boot_flash_ops"],
        )
    )
    rep.add()
    rep.add(
        "Modules a call home with an install imports later: %s; the other phases' (anchors, "
        "channel, config mode): %s (rows below; each phase releases its modules when it ends)."
        % (", ".join(res["callhome_modules"]), ", ".join(res.get("phase_modules", ())))
    )
    rep.add()
    rep.table(
        ["module imported alone (with its imports)", "heap bytes"],
        [[m, n] for m, n in res["per_module"]],
    )


def sig_section(rep, res):
    rep.add("## 6. Signature verification (firmware/trust.py as .mpy, unix port)")
    rep.add()
    rows = []
    for r in res["rows"]:
        ok = r["check"]["median"] / 1000.0 <= TARGETS["sig_ms"]
        rows.append(
            [
                "RSA-%d" % r["bits"],
                _spread(r["check"], fmt="%.2f"),
                _spread(r["pow"], fmt="%.2f"),
                _spread(r["sha"], fmt="%.3f"),
                _verdict(ok) if r["bits"] == 3072 else "",
                _spread(r["check_sqm"], fmt="%.2f"),
                _spread(r["sqm"], fmt="%.2f"),
                "%.2f" % (r["sqm"]["median"] / max(r["pow"]["median"], 1)),
            ]
        )
    rep.table(
        [
            "key",
            "trust.check ms",
            "bare pow(s, 65537, n) ms",
            "sha256 of manifest ms",
            "3072 <= 5 ms",
            "trust.check without 3-arg pow ms",
            "square-and-multiply ms",
            "ratio sqm/pow",
        ],
        rows,
    )
    rep.add(
        "Without three-argument `pow` (ESP8266: NotImplementedError) trust.py verifies by "
        "square-and-multiply, 16 squarings and one multiply mod n (`trust.pow65537`)."
    )
    rep.add()


def channel_section(rep, res):
    rep.add("## 7. Channel resume (bench/channel_resume.py)")
    rep.add()
    rep.add(
        "Bundle %d bytes, cut once, then one more poll (one run per cut)." % res["bundle_bytes"]
    )
    rep.add()
    rep.table(
        ["cut at", "resumed bytes", "restart bytes (baseline)", "saved"],
        [
            [r["cut_at"], r["resumed_bytes"], r["restart_bytes"], "%.1f%%" % r["saved_pct"]]
            for r in res["rows"]
        ],
    )


def run(quick=False, out=OUT, channel=True):
    """Measure everything; returns the raw results (and writes the report to `out`)."""
    payloads = [16 * KIB] if quick else [64 * KIB, MIB, 4 * MIB]
    started = time.time()
    rep = Report()
    raw = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        world = figures.new_world(tmp)
        try:
            raw["sig"] = figures.signatures(world, runs=3 if quick else 30)
            raw["noupdate"] = figures.no_update(world, calls=3 if quick else 8)
            raw["boot"] = figures.boot(world, runs=2 if quick else 5)
            raw["footprint"] = figures.footprint(world, raw["boot"])
            raw["throughput"] = figures.throughput(
                world, 16 * KIB if quick else MIB, runs=1 if quick else 5
            )
            raw["heap"] = figures.heap_floor(world, payloads, confirm=1 if quick else 2)
            raw["deploy"] = figures.romfs_floor(world, raw["heap"], confirm=1 if quick else 2)
            first = raw["heap"]["rows"][0]
            raw["phases"] = figures.phases(
                world, first["client"], first["payload"], confirm=1 if quick else 2
            )
        finally:
            world.close()
    if channel:
        raw["channel"] = channel_resume.run()
    elapsed = time.time() - started
    rep.add("# Benchmark results")
    rep.add()
    rep.add(
        "Written by `make bench` (`python -m bench.run%s`) on %s, %s, %s; %.0f s. "
        "Every figure is beside a baseline measured in the same run. See docs/benchmarks.md."
        % (
            " --quick" if quick else "",
            time.strftime("%Y-%m-%d %H:%M", time.localtime()),
            platform.machine(),
            Path(micropython()).name,
            elapsed,
        )
    )
    rep.add()
    goals_section(rep, raw)
    heap_section(rep, raw["heap"])
    deployment_section(rep, raw["deploy"])
    phase_section(rep, raw["phases"])
    throughput_section(rep, raw["throughput"])
    _heap_ready_note(rep, raw["throughput"])
    noupdate_section(rep, raw["noupdate"])
    boot_section(rep, raw["boot"])
    footprint_section(rep, raw["footprint"])
    sig_section(rep, raw["sig"])
    if channel:
        channel_section(rep, raw["channel"])
    if out is not None:
        Path(out).write_text("\n".join(rep.lines) + "\n")
    return raw


def quick_floor(payload):
    """The whole-run floor of ours (.mpy and ROMFS beyond the image) for one payload, each
    confirmed once: the quick check of one diet step (the full figures come from make bench)."""
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        world = figures.new_world(tmp)
        try:
            heap = figures.heap_floor(world, [payload], confirm=1, only=("client",))
            dep = figures.romfs_floor(world, heap, confirm=1)
        finally:
            world.close()
    m, r = dep["rows"][0]["mpy"], dep["rows"][0]["romfs"]
    print(
        "%s: .mpy %s, ROMFS %.1f KiB beyond the image (%s with it); %.0f s"
        % (_size(payload), _floor(m), r["beyond"] / KIB, _floor(r), time.time() - started)
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one run each")
    p.add_argument("--out", default=str(OUT), help="where to write the report (markdown)")
    p.add_argument("--no-channel", action="store_true", help="skip bench/channel_resume.py")
    p.add_argument("--floor", type=int, metavar="KIB", help="only the whole-run floors")
    args = p.parse_args(argv)
    if args.floor:
        quick_floor(args.floor * KIB)
        return 0
    run(quick=args.quick, out=args.out, channel=not args.no_channel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
