"""The mip deployment, device level: a virtual ESP32 whose client, Microdot, boot.py, main.py,
config page and anchors were all installed by `mip.install` (package.json into /lib, root.json
into /), from the repository on a local HTTP server, boots through its own main loop, calls
home over verified TLS against `ias serve`, installs a signed bundle and commits it."""

import os
import subprocess

import pytest
from repohost import repo_server  # noqa: F401 (fixture)

from tests.scenario import (  # noqa: F401 (fixtures)
    assert_first_release_commits,
    make_world,
    one_root_world,
    staged_firmware,
)
from tools import FIRMWARE, REPO, VBOARD, packaging
from tools.sim import micropython


@pytest.fixture
def world(make_world):  # noqa: F811
    return one_root_world(make_world)


def test_board_installed_by_mip_calls_home_and_installs_a_bundle(world, repo_server):  # noqa: F811
    base, server = repo_server
    proc = subprocess.run(
        [micropython(), str(REPO / "tests" / "mip_board.py"), str(world.board), base, FIRMWARE],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, MICROPYPATH="%s:.frozen" % VBOARD),
    )
    assert proc.returncode == 0 and "MIP-INSTALLED" in proc.stdout, proc.stdout + proc.stderr
    flash = world.listing("/")
    lib = sorted(p for p in flash if p.startswith("/lib/"))
    assert lib == sorted(
        ["/lib/ias/" + n for n in packaging.client_modules() + ["board_unix.py", "vpartition.py"]]
        + [
            "/lib/microdot/" + n
            for n in ("__init__.py", "helpers.py", "microdot.py", "multipart.py")
        ]
    )
    for dest, _src in packaging.root_files():
        assert flash["/" + dest] == (REPO / _src).stat().st_size, dest
    assert "/cert/labRoot.cer" in flash  # the operator's own server's root, beside them
    assert "/firmware/boot.py" in server.requests and "/package.json" in server.requests

    assert_first_release_commits(world)
