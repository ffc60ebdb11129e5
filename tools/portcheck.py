"""Check what the firmware calls on each port against that port's API stubs, with pyright.

    python -m tools.portcheck --install     # `make setup`: put each port's stubs in place
    python -m tools.portcheck [PORT ...]    # print the findings; exit 1 if there are any

The unix port has every builtin module, so the virtual board cannot show a call that the ESP32 or
ESP8266 firmware lacks (`hashlib.md5` on ESP8266, `tls.CERT_REQUIRED` under axTLS). The stub
packages `micropython-<port>-stubs` are generated from each port's real firmware; pyright reads
the modules that run on the port (the shared ones and its board) against them and this module
keeps what concerns a port API:
  - a module attribute or an import missing on the port (`esp32.bogus`, `import esp32` on ESP8266);
  - an attribute missing on a class the port's modules define (`machine.Pin.nonexistent`);
  - a call to a port module's function or class with arguments it does not take.
Pyright's other findings (our own loose typing, Optional narrowing) are not about the port and
are dropped. A use inside `try:` whose handler catches AttributeError (ImportError for imports)
or in the branch of `if hasattr(x, "name"):` is the firmware probing for the feature, and is not
a finding. What is left and is stub noise or known safe is in ALLOWED, each entry with its
reason; an entry that no longer matches anything is itself reported, so the list cannot outgrow
the code.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from . import FIRMWARE, REPO, deploy

PORTS = ("esp32", "esp8266")

# (port or None for both, file, text in pyright's message, why it is no finding). Keep it short.
ALLOWED = (
    (
        None,
        "board.py",
        'Import ".board_',
        "open_board() imports the board module of the port it runs on (sys.platform), the one"
        " `ias deploy` ships there",
    ),
    (
        None,
        "certstore.py",
        'attribute "verify_mode" for class "SSLContext"',
        "stub noise: verify_mode is served by SSLContext's attribute handler (mbedTLS and axTLS"
        " alike); the stub generator lists only the class's methods",
    ),
    (
        None,
        "webguard.py",
        'attribute "aclose" for class "StreamWriter"',
        "stub noise: the stub copies CPython's StreamWriter; MicroPython's asyncio Stream has"
        " aclose() (checked on the unix port: hasattr(asyncio.StreamWriter, 'aclose'))",
    ),
    (
        None,
        "device.py",
        'Import "app" could not be resolved',
        "the user's app, imported from its slot folder that device.py puts on sys.path",
    ),
    (
        None,
        "httpclient.py",
        '"monotonic" is not a known attribute of module "time"',
        "the CPython fallback after `from time import ticks_ms` failed: never runs on a port",
    ),
    (
        "esp8266",
        "certstore.py",
        '"CERT_REQUIRED" is not a known attribute of module "tls"',
        "CertStore.context() builds the verifying context, which connect() asks for only where"
        " board.tls_verifies; the ESP8266 board says False and takes unverified_context()",
    ),
    (
        "esp8266",
        "certstore.py",
        'attribute "load_verify_locations" for class "SSLContext"',
        "as above: the verifying context is never built on ESP8266 (axTLS cannot verify)",
    ),
)
# Real findings a change under way fixes, listed so `make test` stays green until it lands; each
# entry must still match, so the fix fails the test until its entry is removed here. (Empty: the
# call home's hashlib.md5 on ESP8266 was the last; MD5 is optional there now.)
KNOWN = ()

# Pyright rules that can mean "the port has no such thing"; everything else is dropped.
RULES = {"reportAttributeAccessIssue", "reportMissingImports", "reportCallIssue"}
_MODULE_ATTR = re.compile(r'is not a known attribute of module "([\w.]+)"')
_CLASS_ATTR = re.compile(r'attribute "\w+" for class "(?:type\[)?(\w+)')
_IMPORT = re.compile(r'Import "([\w.]+)" could not be resolved')
_UNKNOWN_SYMBOL = re.compile(r'"\w+" is unknown import symbol')
_ATTR_NAME = re.compile(r'^(?:Cannot (?:access|assign to) attribute )?"(\w+)"')


def _pins():
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["ias"]["port-stubs"]


def stub_dir(port):
    """Where this environment keeps the port's stubs (beside the pyright that reads them)."""
    return Path(sys.prefix) / "port-stubs" / port


def install_stubs(port):
    """Put the pinned stubs for `port` in stub_dir(port) unless they are there already."""
    pins = _pins()
    want = "%s %s\n" % (pins[port], pins["stdlib"])
    folder = stub_dir(port)
    marker = folder / "PINNED"
    if marker.exists() and marker.read_text() == want:
        return folder
    folder.parent.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=port + ".", dir=folder.parent))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(tmp)]
    subprocess.run(cmd + [pins[port], pins["stdlib"]], check=True)
    (tmp / "PINNED").write_text(want)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def port_files(port, firmware=FIRMWARE):
    """{path on the device: source file} of the modules `ias deploy` ships to `port` (not the
    virtual board's modules, nor the other chip's board): boot.py and main.py at the root, the
    rest in the package ias."""
    out = {}
    for name in deploy.firmware_modules(port, str(firmware)):
        out[name if name in deploy.SOURCE_FILES else deploy.PACKAGE + "/" + name] = Path(
            firmware, name
        )
    return out


def _stub_modules(stubs):
    """Top-level module names the stub folder provides (the port's modules and its stdlib)."""
    names = {p.stem for p in stubs.glob("*.pyi")} | {
        p.name for p in stubs.iterdir() if p.is_dir() and (p / "__init__.pyi").exists()
    }
    for line in (stubs / "stdlib" / "VERSIONS").read_text().splitlines():
        if ":" in line and not line.startswith("#"):
            names.add(line.split(":")[0].strip().split(".")[0])
    return names - {"builtins", "__builtins__", "_typeshed", "typing", "typing_extensions"}


def _stub_classes(stubs, modules):
    """Names of the classes that the given stub modules declare."""
    out = set()
    for mod in modules:
        for path in (
            stubs / (mod + ".pyi"),
            stubs / mod / "__init__.pyi",
            stubs / "stdlib" / (mod + ".pyi"),
        ):
            if path.exists():
                out |= {n.name for n in ast.walk(ast.parse(path.read_text())) if _is_class(n)}
        pkg = stubs / "stdlib" / mod
        if pkg.is_dir():
            for path in pkg.glob("*.pyi"):
                out |= {n.name for n in ast.walk(ast.parse(path.read_text())) if _is_class(n)}
    return out


def _is_class(node):
    return isinstance(node, ast.ClassDef)


class _Source:
    """One checked file's syntax: its try-guards, its imports of port modules, its calls."""

    def __init__(self, text, port_modules):
        self.tree = ast.parse(text)
        self.imported = set()  # top-level port modules this file imports
        self.bound = set()  # local names bound to a port module or something imported from one
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    top = a.name.split(".")[0]
                    if top in port_modules:
                        self.imported.add(top)
                        self.bound.add(a.asname or top)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                top = node.module.split(".")[0]
                if top in port_modules:
                    self.imported.add(top)
                    self.bound |= {a.asname or a.name for a in node.names}

    def _enclosing(self, line, kind):
        return [n for n in ast.walk(self.tree) if isinstance(n, kind) and _spans(n, line)]

    def guarded(self, line, exc, attr=None):
        """True when `line` is in the body of a try whose handlers catch `exc` by name, or (for a
        missing attribute `attr`) in the branch taken when `hasattr(..., attr)` is true."""
        for node in self._enclosing(line, ast.Try):
            if not any(_spans(s, line) for s in node.body):
                continue
            for h in node.handlers:
                names = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
                if any(isinstance(n, ast.Name) and n.id == exc for n in names):
                    return True
        for node in self._enclosing(line, (ast.If, ast.IfExp)):
            body = node.body if isinstance(node, ast.If) else [node.body]
            if any(_spans(s, line) for s in body) and _tests_hasattr(node.test, attr):
                return True
        return False

    def port_call(self, line):
        """True when the innermost call on `line` is to a name bound by a port import."""
        calls = [c for c in self._enclosing(line, ast.Call) if c.lineno == line]
        calls.sort(key=lambda c: c.col_offset, reverse=True)
        for call in calls:
            root = call.func
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name):
                return root.id in self.bound
        return False


def _tests_hasattr(test, attr):
    return any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id == "hasattr"
        and len(n.args) == 2
        and isinstance(n.args[1], ast.Constant)
        and n.args[1].value == attr
        for n in ast.walk(test)
    )


def _spans(node, line):
    return node.lineno <= line <= (node.end_lineno or node.lineno)


def run_pyright(port, files, stubs, workdir):
    """Pyright's JSON diagnostics for `files` ({device path: source}) staged in `workdir`."""
    work = Path(workdir)
    for rel, src in files.items():
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    config = {
        "include": sorted(files),
        "typeshedPath": str(stubs),  # its stdlib/: MicroPython's builtins, os, sys, asyncio ...
        "stubPath": str(stubs),  # machine, network, esp, esp32, tls, hashlib ... of this port
        "extraPaths": ["."],
        "pythonVersion": "3.11",
        "pythonPlatform": "All",  # else `if sys.platform == "esp32":` is unreachable, unchecked
        "typeCheckingMode": "basic",
    }
    (work / "pyrightconfig.json").write_text(json.dumps(config, indent=1))
    # The venv's python: its site-packages hold microdot, which the device has in /lib/microdot.
    cmd = [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable]
    env = dict(os.environ, PYRIGHT_PYTHON_IGNORE_WARNINGS="1")  # no look-up of newer versions
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    try:
        return json.loads(proc.stdout)["generalDiagnostics"]
    except (ValueError, KeyError):
        raise RuntimeError("pyright failed (%d): %s" % (proc.returncode, proc.stderr[-2000:]))


class Diagnosis:
    """Pyright's diagnostics for one port, with what is needed to tell which are about it."""

    def __init__(self, port, firmware=FIRMWARE, extra=None):
        """`extra` ({device path: source}) adds or replaces files: a deliberately wrong one."""
        self.port = port
        stubs = install_stubs(port)
        self.files = port_files(port, firmware)
        self.files.update(extra or {})
        self.modules = _stub_modules(stubs)
        with tempfile.TemporaryDirectory(prefix="portcheck.") as work:
            self.diags = run_pyright(port, self.files, stubs, work)
        self.sources = {
            r: _Source(Path(s).read_text(), self.modules) for r, s in self.files.items()
        }
        imported = set().union(*(s.imported for s in self.sources.values()))
        ours = {n.name for s in self.sources.values() for n in ast.walk(s.tree) if _is_class(n)}
        # A class of the firmware's own may share its name with a port class: it is not one.
        self.classes = _stub_classes(stubs, imported) - ours

    def about_port(self):
        """[(file, line, message)] of the unguarded diagnostics about the port's API."""
        out = []
        for d in self.diags:
            if d.get("severity") != "error" or d.get("rule") not in RULES:
                continue
            rel = _device_path(d["file"], self.files)
            src, line, msg = self.sources[rel], d["range"]["start"]["line"] + 1, d["message"]
            if not _about_port(d["rule"], msg, line, src, self.modules, self.classes):
                continue
            missing_module = d["rule"] == "reportMissingImports" or _UNKNOWN_SYMBOL.search(msg)
            attr = _ATTR_NAME.search(msg)
            exc = "ImportError" if missing_module else "AttributeError"
            if src.guarded(line, exc, attr and attr.group(1)):
                continue
            out.append((rel, line, msg.splitlines()[0]))
        return out

    def findings(self, allowed=ALLOWED, known=KNOWN):
        """(findings, entries of the lists that matched nothing) for this port."""
        entries = [e for e in allowed + known if e[0] in (None, self.port)]
        left, used = [], set()
        for rel, line, msg in self.about_port():
            hits = [e for e in entries if e[1] == Path(rel).name and e[2] in msg]
            used.update(hits)
            if not hits:
                left.append((rel, line, msg))
        return left, [e for e in entries if e not in used]


def _device_path(reported, files):
    for rel in files:
        if reported.endswith("/" + rel):
            return rel
    raise KeyError(reported)


def _about_port(rule, msg, line, src, modules, classes):
    """Whether a diagnostic is about the port's API rather than the firmware's own types."""
    m = _MODULE_ATTR.search(msg)
    if m:
        return m.group(1).split(".")[0] in modules
    m = _CLASS_ATTR.search(msg)
    if m:
        return m.group(1) in classes
    if _IMPORT.search(msg):  # a port module, or a sibling that is not shipped to this port
        return True
    if _UNKNOWN_SYMBOL.search(msg):
        return any(
            isinstance(n, ast.ImportFrom) and not n.level and _spans(n, line)
            for n in ast.walk(src.tree)
        )
    if rule == "reportCallIssue":
        return src.port_call(line)
    return False


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if args == ["--install"]:
        for port in PORTS:
            print("port stubs:", install_stubs(port))
        return 0
    bad = 0
    for port in args or PORTS:
        findings, unused = Diagnosis(port).findings()
        for rel, line, msg in findings:
            print("%s: %s:%d: %s" % (port, rel, line, msg))
        for entry in unused:
            print("%s: allow-list entry matches nothing now: %s %r" % (port, entry[1], entry[2]))
        bad += len(findings) + len(unused)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
