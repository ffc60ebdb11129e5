"""Host-side tools for the IAS MicroPython client: the `ias` command."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
VBOARD = Path(__file__).resolve().parent / "vboard"
