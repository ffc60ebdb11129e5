"""`make demo` end to end: update, CA change and recovery, rollback, each step checked."""

from tools import demo


def test_demo_tells_the_whole_story(tmp_path, capsys):
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
