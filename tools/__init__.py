"""Host-side tools for the IAS MicroPython client: the `ias` command."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
VBOARD = Path(__file__).resolve().parent / "vboard"


def pkg_path():
    """A folder holding `ias` -> firmware/: firmware modules import each other relatively as the
    package `ias`, so tests and host tools put this folder (not firmware/) on their path."""
    folder = REPO / "build" / "pkg"
    link = folder / "ias"
    if not link.is_symlink():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ("ias.%d" % os.getpid())
        tmp.symlink_to(FIRMWARE, target_is_directory=True)
        tmp.replace(link)  # atomic: parallel test runs may race here
    return str(folder)
