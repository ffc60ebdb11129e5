# What every installer shares: the parts it works on, passed in explicitly, and the rule for
# unsigned payloads. An installer only installs: begin/write/finish stream a body into the
# inactive slot or partition, activate() puts it on trial (trial.begin). It never commits: when
# a version is already on trial it refuses, and the device's loop decides (trial.commit).
import hashlib

from .reason import ReasonError

FLASH_BLOCK = 4096


def new_md5():
    """A hashlib.md5(), or None on builds without MD5 (ESP8266 from 1.22): there x-MD5 is only
    the artifact's identity (refused list, reporting); the signature and SHA-256 protect it."""
    try:
        return hashlib.md5()
    except AttributeError:
        return None


def abort_quietly(installer):
    """Abort what `installer` staged after a failure (the device is then unchanged); the
    caller re-raises the failure itself, so an error inside abort() is not the one reported."""
    try:
        installer.abort()
    except Exception:
        pass


def unsigned_policy(board, settings, verified, what):
    """An unsigned payload needs a board whose TLS verifies, a connection that was verified
    (`verified`) and settings allow_unsigned. Raises ReasonError("unsigned") otherwise."""
    if not board.tls_verifies:
        raise ReasonError("unsigned", "%s: this board cannot verify TLS, only signed" % what)
    if not verified:
        raise ReasonError("unsigned", "%s over a connection that was not verified" % what)
    if not settings.get("allow_unsigned"):
        raise ReasonError("unsigned", "%s refused (settings allow_unsigned is off)" % what)


class Installer:
    """board, settings and state of the device; slots (slots.Slots); keys (trust keys, None:
    load them from slots.keys_dir); verified: the body comes from a source authenticated in
    this contact (verified TLS, or a channel whose signature verified)."""

    kind = None

    def __init__(self, board, settings, state, slots, keys=None, verified=False):
        self.board = board
        self.settings = settings or {}
        self.state = state
        self.verified = bool(verified)
        self.slots = slots
        self.keys = keys
        self.size = 0
        self.got = 0
        self.ready = False

    def start(self, size, name, version):
        """Common to every begin(): refuse while a version is on trial (only the device's loop
        commits one), then remember what the server announced."""
        if self.slots.trial():
            raise ReasonError("trial_pending", "the version on trial is not committed yet")
        self.size = size
        self.name = name
        self.version = version
