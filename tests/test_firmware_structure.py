"""The package's shape, read from the source: no import cycle between firmware modules (lazy
imports inside functions count too: a cycle is a cycle whenever it is taken), the board factory
being the one exception; no module imports or reads another module's private (_name) names;
siblings are imported relatively, so the package cannot be shadowed by a user's module."""

import ast
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
MODULES = {p.stem: p for p in FIRMWARE.glob("*.py") if p.stem not in ("boot", "main")}
# board.open_board() picks the port's implementation, which subclasses board's base classes.
BOARD_FACTORY = {"board", "board_esp", "board_esp32", "board_esp8266", "board_unix"}


def _private(name):
    return name.startswith("_") and not name.startswith("__")


def _imports(path):
    """[(sibling, names or None, line)] of every import of a firmware module in `path`, and
    {local name: sibling} of the modules bound by them."""
    tree = ast.parse(path.read_text(), str(path))
    found, bound = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:  # from . import a, b
                for alias in node.names:
                    found.append((alias.name, None, node.lineno))
                    bound[alias.asname or alias.name] = alias.name
            elif node.level == 1:  # from .a import x
                found.append((node.module, [a.name for a in node.names], node.lineno))
            elif node.module in MODULES:
                found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    found.append((alias.name, None, node.lineno))
    return tree, found, bound


def _graph():
    return {
        name: {mod for mod, _, _ in _imports(path)[1] if mod in MODULES}
        for name, path in MODULES.items()
    }


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_except_the_board_factory():
    cycles = [c for c in _cycles(_graph()) if not c <= BOARD_FACTORY]
    assert not cycles, "import cycles between firmware modules: %s" % [sorted(c) for c in cycles]


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_from_other_modules(name):
    tree, found, bound = _imports(MODULES[name])
    bad = [
        "line %d: from .%s import %s" % (line, mod, n)
        for mod, names, line in found
        for n in names or ()
        if _private(n)
    ]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and _private(node.attr)
        ):
            bad.append("line %d: %s.%s" % (node.lineno, node.value.id, node.attr))
    assert not bad, "%s.py uses private names of other modules: %s" % (name, bad)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_siblings_are_imported_relatively(name):
    tree = ast.parse(MODULES[name].read_text())
    absolute = [
        "line %d" % node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in MODULES)
        or (isinstance(node, ast.Import) and any(a.name in MODULES for a in node.names))
    ]
    assert not absolute, "%s.py imports a sibling absolutely: %s" % (name, absolute)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_attributes_of_other_objects(name):
    """Config mode calls no private method of the device, and no module reaches into another's
    objects (a Microdot request included): only self, cls and this module's own classes."""
    tree = ast.parse(MODULES[name].read_text())
    own = {"self", "cls"} | {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    bad = [
        "line %d: %s.%s" % (node.lineno, ast.unparse(node.value), node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and _private(node.attr)
        and not (isinstance(node.value, ast.Name) and node.value.id in own)
    ]
    assert not bad, "%s.py reads private attributes of other objects: %s" % (name, bad)
