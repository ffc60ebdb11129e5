"""docs/app-api.md stays true to firmware/app_api.py and to examples/asyncio_app: every event
and every public member of App is documented, and the doc's asyncio snippet is the example's
code (the example itself runs on a virtual board in tests/test_asyncio_app_e2e.py)."""

import ast
import re

from tools import REPO

DOC = (REPO / "docs" / "app-api.md").read_text()
SRC = (REPO / "firmware" / "app_api.py").read_text()


def _app_class():
    tree = ast.parse(SRC)
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "App"]
    return tree, cls


def test_every_event_is_documented():
    tree, _ = _app_class()
    (events,) = [
        n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "EVENTS"
    ]
    names = [e.value for e in events.elts]
    assert len(names) == 10
    for name in names:
        assert "`%s`" % name in DOC, name


def test_every_public_member_is_documented():
    _, cls = _app_class()
    methods = [f.name for f in cls.body if isinstance(f, ast.FunctionDef)]
    attrs = set(re.findall(r"self\.([a-z]\w*) =", SRC))
    internal = {"start", "tick", "emit"}  # the device's side, not the app's
    for name in (set(methods) | attrs) - internal - {"__init__"}:
        assert "`ias.%s" % name in DOC, name


def test_the_asyncio_snippet_is_the_example():
    (block,) = re.findall(r"```python\n(.*?)```", DOC, re.S)
    example = (REPO / "examples" / "asyncio_app" / "app.py").read_text()
    lines = [ln.split("#")[0].rstrip() for ln in block.splitlines() if ln.strip()]
    for line in lines:
        assert line in example, line
    assert "asyncio.create_task(ias.client())" in example
