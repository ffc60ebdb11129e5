"""tools/sysdeps.py: what is missing maps to Debian packages; apt-get failures are one line."""

import subprocess

from tools import sysdeps


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
