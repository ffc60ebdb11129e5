"""The docs, executed: every shell block of README.md and docs/channel.md runs as written, in
order, in a scratch folder, so a walk-through that drifts from the tools fails the suite.

The scratch folder stands for the repository's folder after `make setup`: it holds `.venv`
(a link to this checkout's) and a copy of `examples/`; nothing else of the repository, so a
block that needs a file must make it. Each file's blocks share one folder, in document order.
A block is a fenced block whose language is sh, bash or shell; every fenced block must name a
language, so no shell block goes unnoticed. Commands of the `ias` tool are spelled
`.venv/bin/ias`, as a reader types them after `make setup`.

An HTML comment on the line just before a block changes how it runs:

    <!-- docs-test: skip (WHY) -->           not run; the test item is skipped, saying WHY
                                             (a real board, `make` itself, a server that
                                             serves until closed and is tested elsewhere)
    <!-- docs-test: background until "TEXT" -->
                                             what the docs say to run in another terminal:
                                             started in the background, the next block runs
                                             once its output shows TEXT (30 s at most); it is
                                             ended after the file's last block
    <!-- docs-test: expect "TEXT" -->         run, and its output must contain TEXT

Any other block must exit 0 (bash -e) within 120 s.
"""

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tools import REPO

DOCS = ("README.md", "docs/channel.md")
SHELLS = ("sh", "bash", "shell")
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^(```+)\s*(\S*)\s*$")


class Block:
    def __init__(self, doc, line, lang, text, directive):
        self.doc, self.line, self.lang, self.text = doc, line, lang, text
        self.mode, self.arg = "run", None
        if directive is not None:
            m = re.fullmatch(
                r'(skip) \((.+)\)|(background) until "(.+)"|(expect) "(.+)"', directive
            )
            if m is None:
                raise ValueError("%s:%d: unknown docs-test comment %r" % (doc, line, directive))
            groups = [g for g in m.groups() if g is not None]
            self.mode, self.arg = groups

    @property
    def id(self):
        return "%s:%d" % (self.doc, self.line)


def blocks(doc):
    """Every fenced block of `doc` (language, text, its docs-test comment)."""
    lines = (REPO / doc).read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2), i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == fence)
        before = lines[start - 1] if start > 0 else ""
        d = DIRECTIVE.search(before)
        out.append(Block(doc, start + 1, lang, "\n".join(lines[start + 1 : end]) + "\n",
                         d.group(1) if d else None))  # fmt: skip
        i = end + 1
    return out


SHELL_BLOCKS = [b for doc in DOCS for b in blocks(doc) if b.lang in SHELLS]


def test_every_block_names_its_language_and_ias_is_spelled_out():
    for doc in DOCS:
        for b in blocks(doc):
            assert b.lang, "%s: a fenced block without a language (sh, nginx, ...)" % b.id
            if b.lang not in SHELLS:
                continue
            for line in b.text.splitlines():
                assert not re.match(r"\s*ias\s", line), "%s: `%s`: spell it .venv/bin/ias" % (
                    b.id,
                    line.strip(),
                )
    assert {b.doc for b in SHELL_BLOCKS} == set(DOCS)
    assert sum(b.mode != "skip" for b in SHELL_BLOCKS) >= 4


class Workspace:
    def __init__(self, folder):
        self.folder = folder
        self.background = []

    def stop(self):
        for proc, _ in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.background = []


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    made = {}

    def get(doc):
        if doc not in made:
            folder = tmp_path_factory.mktemp("docs-" + Path(doc).stem)
            (folder / ".venv").symlink_to(REPO / ".venv")
            shutil.copytree(REPO / "examples", folder / "examples",
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
            made[doc] = Workspace(folder)
        return made[doc]

    yield get
    for ws in made.values():
        ws.stop()


def _bash(block, ws, **kw):
    return subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", block.text],
        cwd=ws.folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


def _start_background(block, ws):
    proc = _bash(block, ws)
    seen, ready = [], threading.Event()

    def pump():
        for line in proc.stdout:
            seen.append(line)
            if block.arg in line:
                ready.set()
        ready.set()  # it ended

    threading.Thread(target=pump, daemon=True).start()
    ws.background.append((proc, seen))
    if not ready.wait(30) or block.arg not in "".join(seen):
        raise AssertionError(
            "%s: %r never appeared; output:\n%s" % (block.id, block.arg, "".join(seen))
        )


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[b.id for b in SHELL_BLOCKS])
def test_doc_block_runs_as_written(block, workspaces):
    if block.mode == "skip":
        pytest.skip("%s not run: %s" % (block.id, block.arg))
    ws = workspaces(block.doc)
    if block.mode == "background":
        _start_background(block, ws)
        return
    t0 = time.monotonic()
    proc = _bash(block, ws)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    took = time.monotonic() - t0
    assert proc.returncode == 0, "%s failed (exit %s) after %.1f s:\n%s\n--- output:\n%s" % (
        block.id,
        proc.returncode,
        took,
        block.text,
        out,
    )
    if block.mode == "expect":
        assert block.arg in out, "%s: %r not in its output:\n%s" % (block.id, block.arg, out)
    if block is [b for b in SHELL_BLOCKS if b.doc == block.doc][-1]:
        ws.stop()  # the file's last block: end what it started in the background
