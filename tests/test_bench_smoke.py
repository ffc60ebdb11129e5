"""The bench machinery works: the floor search finds a known floor, and the whole run on tiny
sizes (bench.run --quick: a 16 KiB bundle, one run per figure) produces every figure and the
report. The figures themselves are not checked against targets here: `make bench` reports them."""

import pytest

from bench import run as bench_run
from bench.world import floor_search, stats


@pytest.mark.parametrize("floor", [4096, 15 * 1024, 173 * 1024, 4154 * 1024])
@pytest.mark.parametrize("hint", [16 * 1024, 96 * 1024, 1 << 20])
def test_floor_search_finds_the_floor(floor, hint):
    found, tries = floor_search(lambda h: h >= floor, hint)
    assert found == floor
    assert len(tries) < 40


def test_stats():
    assert stats([3, 1, 2]) == {"n": 3, "median": 2, "min": 1, "max": 3}


def test_quick_run_produces_every_figure(tmp_path):
    out = tmp_path / "results.md"
    raw = bench_run.run(quick=True, out=out, channel=False)
    row = raw["heap"]["rows"][0]
    for name in ("client", "naive", "bare"):
        cell = row[name]
        # the search bracketed it: a pass at the floor, a fail 1 KiB below
        assert 4096 < cell["lowest_pass"] <= cell["floor"] < 16 << 20, (name, cell)
        assert cell["below_fails"] >= 0 and cell["runs"] >= 3
    # bare TLS needs less than an updater that also holds the body and a filesystem
    assert row["bare"]["floor"] < row["naive"]["floor"]
    # The ROMFS deployment: the same run from the image; the image's bytes counted apart, and
    # running bytecode in place needs less heap than loading the .mpy files.
    dep = raw["deploy"]["rows"][0]
    assert dep["mpy"] == row["client"]
    rom = dep["romfs"]
    assert rom["image_heap"] >= rom["image_bytes"] > 50000
    assert rom["beyond"] == rom["floor"] - rom["image_heap"]
    assert 0 < rom["beyond"] < dep["mpy"]["floor"]
    # each phase's peak is a floor like the whole run's, the install phase being that run
    ph = raw["phases"]["cells"]
    assert ph["install"] == row["client"]
    for name in ("boot", "call home", "anchors", "channel", "config mode"):
        assert 4096 < ph[name]["lowest_pass"] <= ph[name]["floor"] < 16 << 20, (name, ph[name])
    tp = raw["throughput"]
    assert tp["payload"] == 16384 and tp["ours_us"]["median"] > tp["download_us"]["median"] > 0
    nu = raw["noupdate"]
    assert nu["ours_wire"]["sent"] > 300 and nu["ours_wire"]["received"] > 300
    assert nu["ours_wire"]["conns"] == nu["bare_wire"]["conns"] == nu["calls"]
    assert len(nu["programs"]) == nu["calls"]
    assert raw["boot"]["ours_us"]["n"] == 2 and raw["boot"]["bare_us"]["median"] > 0
    fp = raw["footprint"]
    assert fp["mpy_total"] > 10000 and "trial" in fp["boot_modules"]
    assert [r["bits"] for r in raw["sig"]["rows"]] == [2048, 3072]
    for r in raw["sig"]["rows"]:  # square-and-multiply timed beside the builtin pow
        assert r["sqm"]["n"] == r["pow"]["n"] and r["sqm"]["median"] > 0
        assert r["check_sqm"]["median"] > 0
    text = out.read_text()
    for heading in (
        "1. Heap floor",
        "0. Issue 16 goals",
        "1b. Whole-run heap floor by deployment",
        "1c. Peak heap of each phase",
        "2. Throughput",
        "3. The no-update",
        "4. Boot",
        "5. Foot",
        "6. Signature",
    ):
        assert "## " + heading in text
    assert "square-and-multiply ms" in text
