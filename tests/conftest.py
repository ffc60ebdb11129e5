import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

pytest_plugins = ["mprunner", "pytester"]


def pytest_runtest_setup(item):
    # The browser tests fail, never skip, when chromium is missing but could be installed:
    # `make test` installs it (tools/sysdeps.py), so a skip would only hide a broken set-up.
    if item.get_closest_marker("browser") is None:
        return
    import pytest

    from tools import sysdeps

    if "chromium" in sysdeps.missing() and sysdeps.installable():
        pytest.fail("chromium is missing: run `python3 tools/sysdeps.py` (as root)", False)
