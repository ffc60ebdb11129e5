"""tools/sysdeps.py: what is missing maps to Debian packages; apt-get failures are one line."""

import subprocess

from tests import makerun
from tools import REPO, sysdeps


def test_missing_names_each_package_once(monkeypatch, tmp_path):
    there = tmp_path / "there"
    there.write_text("#!/bin/sh\n")
    there.chmod(0o755)
    monkeypatch.setattr(
        sysdeps,
        "NEEDED",
        (
            (str(there), "present-pkg"),
            (str(tmp_path / "absent"), "nginx-light"),
            ("no-such-command-xyz", "faketime"),
            ("another-absent-command-xyz", "faketime"),
        ),
    )
    assert sysdeps.missing() == ["nginx-light", "faketime"]
    assert sysdeps.main(["--check"]) == 1


def test_install_runs_update_then_install_and_reports_a_failure(monkeypatch):
    monkeypatch.setattr(sysdeps.os, "geteuid", lambda: 0)
    monkeypatch.setattr(sysdeps.shutil, "which", lambda name: "/usr/bin/" + name)
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        code = 100 if cmd[1] == "install" else 0
        out = "Reading package lists...\nE: Unable to locate package nginx-light\n"
        return subprocess.CompletedProcess(cmd, code, out if code else "")

    error = sysdeps.install(["nginx-light"], run=run)
    assert [c[:2] for c in calls] == [["apt-get", "update"], ["apt-get", "install"]]
    assert calls[1][-1] == "nginx-light"
    assert "exit 100" in error and "Unable to locate package nginx-light" in error
    assert "\n" not in error


def test_install_refuses_without_root(monkeypatch):
    monkeypatch.setattr(sysdeps.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sysdeps.shutil, "which", lambda name: "/usr/bin/" + name)
    error = sysdeps.install(["faketime"], run=None)
    assert error.startswith("not root") and "faketime" in error


def test_this_machine_has_what_the_suite_runs():
    assert sysdeps.missing() == []


def test_not_root_is_one_line_naming_the_command(monkeypatch, capsys):
    monkeypatch.setattr(sysdeps, "missing", lambda: ["chromium", "faketime"])
    monkeypatch.setattr(sysdeps.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sysdeps.shutil, "which", lambda name: "/usr/bin/" + name)
    assert sysdeps.main([]) == 1
    out, err = capsys.readouterr()
    assert out == "sysdeps: installing chromium faketime (apt-get)\n"
    assert err == (
        "sysdeps: not root: run `sudo apt-get install -y chromium faketime`, then `make test` "
        "again\n"
    )


def test_no_apt_get_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sysdeps, "missing", lambda: ["nginx-light"])
    monkeypatch.setattr(sysdeps.shutil, "which", lambda name: None)
    assert sysdeps.main([]) == 1
    err = capsys.readouterr().err
    assert err == (
        "sysdeps: no apt-get here: install nginx-light with your system's package manager, "
        "then run `make test` again\n"
    )
    assert not sysdeps.installable()


def test_nothing_missing_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sysdeps, "missing", lambda: [])
    assert sysdeps.main([]) == 0
    assert capsys.readouterr().out == "sysdeps: nginx-light, chromium, faketime present\n"


def test_setup_prints_one_line_per_step(tmp_path):
    # `make setup` on a fresh machine: every command of the recipe comes after a line that says
    # what it does (the pip steps are --quiet and take a minute; silence looks like a hang).
    venv = tmp_path / "v"
    lines = makerun.dry_run("setup", venv)
    steps = [i for i, line in enumerate(lines) if not line.startswith(("echo ", "touch "))]
    assert len(steps) >= 4
    for i in steps:
        assert i > 0 and lines[i - 1].startswith('echo "setup: '), lines[i]
    assert any("pip install" in line and "--quiet" in line for line in lines)
    assert lines[-1].startswith('echo "setup: done')


def test_a_browser_test_fails_instead_of_skipping_when_chromium_is_installable(pytester):
    # The suite's conftest hook, in a pytester run where chromium is "missing".
    pytester.makeconftest(
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "from tools import sysdeps\n"
        "sysdeps.NEEDED = (('/nonexistent/chromium', 'chromium'),)\n"
        "sysdeps.installable = lambda: True\n"
        "import conftest_suite\n"
        "pytest_runtest_setup = conftest_suite.pytest_runtest_setup\n" % str(REPO)
    )
    (pytester.path / "conftest_suite.py").write_text((REPO / "tests" / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    browser: needs chromium\n")
    pytester.makepyfile(
        "import pytest\n"
        "@pytest.mark.browser\n"
        "def test_page():\n"
        "    pytest.skip('chromium is not installed')\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)  # failed in set-up: not skipped
    result.stdout.fnmatch_lines(["*chromium is missing: run `python3 tools/sysdeps.py`*"])
