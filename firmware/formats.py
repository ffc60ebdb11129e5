# Which installer takes an update body, told from its first bytes: an ESP32 app image starts
# with 0xE9, an app bundle is a gzip stream or a tar (ustar at 257).
from .reason import ReasonError

PEEK = 263  # enough for the ustar magic


def installer_for(first_bytes, board, settings, state, slots, keys=None, verified=False):
    """The installer for a body starting with `first_bytes` (see installer.Installer for the
    other arguments). Raises ReasonError("unknown_format") for anything else."""
    b = bytes(first_bytes[:PEEK])
    if b[:1] == b"\xe9":
        from .fwimage import FirmwareInstaller

        return FirmwareInstaller(board, settings, state, slots, keys, verified)
    if b[:2] == b"\x1f\x8b" or b[257:262] == b"ustar" or len(b) < PEEK:
        from .appbundle import BundleInstaller

        return BundleInstaller(board, settings, state, slots, keys, verified)
    raise ReasonError("unknown_format", "neither an app bundle nor an ESP32 app image")
