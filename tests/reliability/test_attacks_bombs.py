"""Attacks on what a device installs (issue 17 items 3 and 4), counted in the attack ledger on
a virtual ESP32 running the real firmware against `ias serve` (the lab of test_attacks.py): a
gzip bomb (a signed bundle and 64 MiB of zeros after the tar's end), a release that failed its
trial offered again re-padded and re-compressed (the same signed manifest), and a trial the
network blocked (retried when the network returns, then committed). tests/test_bombs_e2e.py
holds the same scenarios with their figures and runs in `make test`; these run in `make
reliability`."""

import gzip
import json
import re

import pytest

from tests.reliability import rig
from tests.reliability.ledger import record
from tests.reliability.test_attacks import CAT, AttackLab
from tools import bundle

# The device's own flash log (where the build keeps one) records each refusal by design.
LOG_FILES = ("/log.txt",)


def persistent(board):
    files, state = board.persistent()
    for path in LOG_FILES:
        files.pop(path, None)
    return files, state


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = AttackLab(tmp_path_factory.mktemp("attacks-bombs"))
    yield lab
    lab.stop()


def _artifact(lab, version, counter, broken=False, tail=b"", wbits=10):
    """A signed bundle as the server's current artifact; `tail` goes after the tar's end, the
    gzip uses a 2**wbits window (other bytes, the same signed manifest)."""
    app = "IASBlink"
    src = rig.app_source(lab.work, version, broken)
    raw = gzip.decompress(bundle.build(src, lab.key, app, version, counter, True))
    data = bundle.gzip_small_window(raw + tail, wbits)
    folder = lab.artifacts / app
    name = "%s-%s-%d.tar.gz" % (app, version, counter)
    (folder / name).write_bytes(data)
    (folder / "current.json").write_text(
        json.dumps({"name": app, "version": version, "file": name})
    )
    return data


@pytest.mark.slow  # make test runs these scenarios in tests/test_bombs_e2e.py
def test_gzip_bomb(lab):
    board = lab.board
    board.restore()
    zeros = 64 * 1024 * 1024
    data = _artifact(lab, "1.2", 1, tail=bytes(zeros))
    before = persistent(board)
    code, res, wall, out = board.callhome()
    after = persistent(board)
    found = re.findall(r"gzip body: (\d+) bytes inflated", out)
    inflated = int(found[-1]) if found else None
    ok = res and (res["outcome"], res["reason"]) == ("error", "too_large") and after == before
    ok = ok and inflated is not None and inflated < 64 * 1024
    record(
        CAT,
        "gzip bomb: signed bundle + 64 MiB of zeros after the tar (%d KB sent)"
        % (len(data) >> 10),
        ok,
        reason=res and res.get("reason"),
        inflated=inflated,
        seconds=round(wall, 2),
    )
    assert res is not None, out[-2000:]
    assert (res["outcome"], res["reason"]) == ("error", "too_large"), res
    assert inflated is not None and inflated < 64 * 1024, inflated
    changed = sorted(set(after[0].items()) ^ set(before[0].items()))
    assert after == before, (changed, before[1], after[1])


@pytest.mark.slow  # make test runs these scenarios in tests/test_bombs_e2e.py
def test_failed_release_offered_again_in_other_bytes(lab):
    board = lab.board
    board.restore()
    _artifact(lab, "1.3", 1, broken=True)
    board.boot(3)  # installs 1.3, whose app raises at import: rolled back and refused
    assert (board.json("/app.json") or {}).get("version") != "1.3"
    before = persistent(board)
    results = []
    for tail, wbits in ((bytes(4096), 10), (bytes(512), 9)):  # re-padded, re-compressed
        _artifact(lab, "1.3", 1, broken=True, tail=tail, wbits=wbits)
        code, res, wall, out = board.callhome()
        results.append(res)
        assert res is not None, out[-2000:]
    after = persistent(board)
    # An install begins by clearing the inactive slot (the failed 1.3's files, docs/installing.md)
    # before the manifest that names the release has arrived: those may go, nothing else.
    inactive = (
        "/slot_a/" if (board.json("/app.json") or {}).get("active") == "slot_b" else "/slot_b/"
    )
    gone = set(before[0]) - set(after[0])
    kept = {p: h for p, h in before[0].items() if p not in gone}
    same = after[0] == kept and after[1] == before[1] and all(p.startswith(inactive) for p in gone)
    ok = all(r["outcome"] == "no-update" and "refused" in r["reason"] for r in results)
    record(
        CAT,
        "release that failed its trial, re-padded and re-compressed",
        ok and same,
        reason=results[-1].get("reason"),
    )
    for res in results:
        assert res["outcome"] == "no-update" and "refused" in res["reason"], res
    assert same, (sorted(gone), before[1], after[1])


@pytest.mark.slow  # make test runs these scenarios in tests/test_bombs_e2e.py
def test_network_blocked_trial_is_retried(lab):
    board = lab.board
    board.restore()
    srv = lab.servers["good"]
    _artifact(lab, "1.4", 1)
    code, res, wall, out = board.callhome()  # installs 1.4 and resets into its trial
    assert res and res["outcome"] == "updated", (res, out[-2000:])
    srv.stop()  # the network is down for the whole trial
    try:
        for _ in range(4):  # three trial boots, then the rollback
            board.boot(2)
    finally:
        srv.start()  # the same ports
    back = (board.json("/app.json") or {}).get("version")
    board.boot(4)  # the network is back: 1.4 is taken again, tried and committed
    ptr = board.json("/app.json") or {}
    ok = back != "1.4" and ptr.get("version") == "1.4" and "trial" not in ptr
    record(
        CAT,
        "trial blocked by the network: retried when it returns",
        ok,
        version=ptr.get("version"),
    )
    assert back != "1.4", back
    assert ptr.get("version") == "1.4" and "trial" not in ptr, ptr
