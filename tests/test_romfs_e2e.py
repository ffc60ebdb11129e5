"""The ROMFS deployment, device level: a virtual ESP32 whose flash holds no /lib at all runs
the client from a ROMFS image mounted at /rom (vfs.VfsRom, as a board with a ROMFS partition
does), calls home over verified TLS against `ias serve`, installs a signed bundle, tries it and
commits it through its own main loop."""

import pytest
from mpremote.romfs import VfsRomWriter

from tests.scenario import APP, make_chain, make_world, staged_firmware  # noqa: F401 (fixtures)


@pytest.fixture
def world(make_world):  # noqa: F811
    chain = make_chain("A")
    return make_world(trust=[chain.root], serve=chain, romfs=True)


def test_board_runs_the_client_from_romfs_and_installs_a_bundle(world):
    image = world.board / "romfs.img"
    assert image.read_bytes().startswith(VfsRomWriter.ROMFS_HEADER)
    flash = world.listing("/")
    # Only the image holds the client: the flash's filesystem has no /lib.
    assert not any(p.startswith("/lib/") for p in flash), flash
    assert "/rom/lib/ias/device.mpy" in flash and "/rom/lib/microdot/microdot.mpy" in flash

    world.boot(1)  # nothing published yet: the call home gets its 404
    assert "main loop" in world.console()
    world.publish("2.0", 2)
    world.boot(3)  # download, verify, switch, reset; the trial's verified call home commits
    ptr = world.pointer()
    assert (ptr["active"], ptr["name"], ptr["version"]) == ("slot_b", APP, "2.0"), world.console()[
        -3000:
    ]
    assert "trial" not in ptr
    assert world.state()["counters"] == {"app": 2}
