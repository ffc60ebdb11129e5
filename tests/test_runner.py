"""The MicroPython test runner must fail when a MicroPython test fails, crashes or goes silent."""

import textwrap
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent)

CONFTEST = "pytest_plugins = ['mprunner']\n"


def _suite(pytester, body, name="test_sample.py"):
    pytester._monkeypatch.setenv("PYTHONPATH", TESTS)
    pytester.makeconftest(CONFTEST)
    unix = pytester.mkdir("unix")
    (unix / name).write_text(textwrap.dedent(body))
    return pytester.runpytest_subprocess("-q", "-rs", "-p", "no:cacheprovider")


def test_passing_tests_pass_one_item_each(pytester):
    result = _suite(pytester, "def test_a():\n    assert 1 + 1 == 2\ndef test_b():\n    pass\n")
    result.assert_outcomes(passed=2)


def test_failing_assert_fails_pytest(pytester):
    result = _suite(pytester, "def test_ok():\n    pass\ndef test_bad():\n    assert 1 == 2\n")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*AssertionError*"])


def test_exception_fails_pytest(pytester):
    result = _suite(pytester, "def test_boom():\n    raise OSError(5)\n")
    result.assert_outcomes(failed=1)


def test_crash_at_import_fails_every_item(pytester):
    result = _suite(pytester, "import no_such_module\ndef test_a():\n    pass\n")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no_such_module*"])


def test_exit_midway_fails_the_rest(pytester):
    body = "import sys\ndef test_a():\n    pass\ndef test_b():\n    sys.exit(0)\n"
    body += "def test_c():\n    pass\n"
    result = _suite(pytester, body)
    # test_a passed before the exit; b and c never reported, and the missing end marker fails them.
    result.assert_outcomes(passed=0, failed=3)


def test_skip_needs_a_reason_and_reports_it(pytester):
    body = "import mptest\ndef test_s():\n    raise mptest.SkipTest('no radio on unix')\n"
    result = _suite(pytester, body)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no radio on unix*"])


def test_heap_limit_is_applied(pytester):
    body = "# mptest: heapsize=16k\ndef test_big():\n    b = bytearray(64 * 1024)\n"
    result = _suite(pytester, body)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MemoryError*"])
