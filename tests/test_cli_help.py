"""`ias --help` and every subcommand's help: each says what it does, with its options."""

import argparse

import pytest

from tools import cli


def _subcommands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _subcommands(sub, prefix + (name,))


ALL = [path for path, _ in _subcommands(cli.build_parser())]


def test_every_command_is_registered():
    top = {path[0] for path in ALL}
    assert top == {name for name, _ in cli.COMMANDS}
    for nested in (
        ("sim", "init"),
        ("sim", "boot"),
        ("sim", "callhome"),
        ("sim", "config"),
        ("sim", "ls"),
        ("sim", "cat"),
        ("bundle", "build"),
        ("bundle", "anchors"),
        ("keys", "new"),
    ):
        assert nested in ALL, nested


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name, _summary in cli.COMMANDS:
        assert name in out


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_subcommand_help(path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(list(path) + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ias " + " ".join(path))
    # More than a usage line: a description or the list of what it takes.
    assert len(out.splitlines()) > 3


def test_unknown_command_fails_with_usage(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["sim", "ls", str(tmp_path / "nothing-here")])
    assert "no virtual board" in str(e.value.code)  # printed as one line by the interpreter
    err = capsys.readouterr()
    assert "Traceback" not in err.out + err.err
