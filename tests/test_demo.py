"""`make demo` end to end: update, CA change and recovery, rollback, each step checked, and a
summary a newcomer reads: words, dates, whole URLs, where the board is and what to try next."""

import re

from tests import makerun
from tools import demo


def test_demo_tells_the_whole_story(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert demo.run_demo(tmp_path / "demo", quiet=True) is True
    out = capsys.readouterr().out
    for step in (
        "update to v1.1",
        "recover from the CA change",
        "update to v1.2 after recovery",
        "bad v1.3 rolls back",
        "bad v1.3 not taken again",
    ):
        assert step in out
    assert "7 of 7 steps as expected" in out
    summary = out[out.index("What happened") :]

    # dates, not epoch seconds: no run of 9 or more digits anywhere in the summary
    assert not re.search(r"\d{9,}", summary), summary
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: the call home failed", summary)
    # words, not reason codes
    assert "the server's certificate chains to no root the device trusts" in summary
    assert "signed anchor bundle v2 installed" in summary
    assert "rolled back, because the app failed to start" in summary
    assert "the server's offer was refused, it failed its trial before" in summary
    for code in ("untrusted", "no-update", "rollback:", "installed v2"):
        assert code not in summary, code
    # whole URLs: both rungs of the ladder, each to its last character
    urls = re.findall(r"location \d (\S+):", summary)
    assert len(urls) == 2
    assert all(re.fullmatch(r"https?://127\.0\.0\.1:\d+/ota/anchors/", u) for u in urls), urls
    # where the board is, and three things to try next, with that folder
    assert "The virtual ESP32 is in demo/esp32 (its flash is demo/esp32/flash.bin)." in out
    tries = out[out.index("Three things to try next:") :].splitlines()[1:]
    commands = [line.strip() for line in tries if line.startswith("  ") and "ias " in line]
    assert len(commands) == 3, tries
    assert commands[0] == "ias sim boot demo/esp32 --cycles 3"
    assert commands[1] == "ias sim config demo/esp32"
    assert all("demo/esp32" in c for c in commands)


def test_make_demo_prints_a_line_per_setup_step():
    # The demo's first run on a fresh machine starts with `make setup`: each quiet pip step is
    # announced first (a dry run here; the real steps are the ones `make test` ran already).
    lines = makerun.dry_run("demo", "/nonexistent/venv")
    pip = [i for i, line in enumerate(lines) if line.startswith("/nonexistent/venv/bin/pip ")]
    assert pip and all(lines[i - 1].startswith('echo "setup: ') for i in pip)
    assert lines[-1] == "/nonexistent/venv/bin/ias demo"
