"""The ROMFS deployment, device level: a virtual ESP32 whose flash holds no /lib at all runs
the client from a ROMFS image mounted at /rom (vfs.VfsRom, as a board with a ROMFS partition
does), calls home over verified TLS against `ias serve`, installs a signed bundle, tries it and
commits it through its own main loop."""

import pytest
from mpremote.romfs import VfsRomWriter

from tests.scenario import (  # noqa: F401 (fixtures)
    assert_first_release_commits,
    make_world,
    one_root_world,
    staged_firmware,
)


@pytest.fixture
def world(make_world):  # noqa: F811
    return one_root_world(make_world, romfs=True)


def test_board_runs_the_client_from_romfs_and_installs_a_bundle(world):
    image = world.board / "romfs.img"
    assert image.read_bytes().startswith(VfsRomWriter.ROMFS_HEADER)
    flash = world.listing("/")
    # Only the image holds the client: the flash's filesystem has no /lib.
    assert not any(p.startswith("/lib/") for p in flash), flash
    assert "/rom/lib/ias/device.mpy" in flash and "/rom/lib/microdot/microdot.mpy" in flash

    assert_first_release_commits(world)
    assert world.state()["counters"] == {"app": 2}
