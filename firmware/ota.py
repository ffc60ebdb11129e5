# Installing updates: signed app bundles into the inactive slot folder with an atomic switch of
# the slot pointer, ESP32 firmware images into the next OTA partition, and the trial that every
# new version must pass (boot, then one verified call home) before it is committed; otherwise it
# is rolled back by itself and the failure is kept for the next call home to report.
#
# Pointer /app.json: {"active": "slot_a", "kind": "bundle"|"firmware"|"factory", "name",
# "version", "counter", "md5", "size"} plus, while a new version is on trial, "prev" (the same
# fields of the version to go back to) and "trial": {"kind", "boots", "since", "target", "from"}.
import json
import os

from . import fsutil, log
from .reason import ReasonError

# trust and tarstream are imported where an install needs them: boot.py imports this module at
# every boot, and RAM is scarce (ESP8266).

SLOTS = ("slot_a", "slot_b")
TRIAL_BOOTS = 3  # boots a new version gets to complete one verified call home
TRIAL_MS = 600000  # ... and at most this long
FLASH_BLOCK = 4096
# State key of the last install or trial failure. Apart from callhome's own "last_error" (which
# the next failed call overwrites), so a rollback is reported even after more failed calls.
ERROR_KEY = "ota_error"
_ART = ("kind", "name", "version", "counter", "md5", "size")


# -- the slot pointer ---------------------------------------------------------------------------
class Slots:
    """The app slots and their pointer under `root` ("" on the device, e.g. "/pc" in tests)."""

    def __init__(self, root=""):
        self.root = root
        self.pointer = root + "/app.json"
        self.staging = root + "/ota.part"
        self.keys_dir = root + "/keys"
        self.settings_path = root + "/settings.json"
        self._info = None

    def read(self):
        if self._info is None:
            info = None
            try:
                with open(self.pointer) as f:
                    info = json.load(f)
            except OSError:
                pass
            except ValueError as e:
                log.warn("ota", "%s unreadable (%s): using slot_a" % (self.pointer, e))
            if not isinstance(info, dict) or info.get("active") not in SLOTS:
                info = {"active": "slot_a", "kind": "factory"}
            self._info = info
        return self._info

    def write(self, info):
        fsutil.write_atomic(self.pointer, json.dumps(info))  # the one atomic switch
        self._info = info

    def path(self, slot):
        return self.root + "/" + slot

    def active(self):
        return self.read()["active"]

    def inactive(self):
        return SLOTS[1] if self.active() == SLOTS[0] else SLOTS[0]

    def active_app_dir(self):
        return self.path(self.active())

    def trial(self):
        return self.read().get("trial")

    def installed_artifact(self):
        info = self.read()
        return {
            "size": info.get("size", 0),
            "md5": info.get("md5", ""),
            "name": info.get("name", ""),
            "version": info.get("version", ""),
            "counter": info.get("counter", 0),
        }

    def free(self):
        st = os.statvfs(self.root or "/")
        return st[0] * st[3]


_default = None


def default_slots():
    global _default
    if _default is None:
        _default = Slots()
    return _default


def active_app_dir(slots=None):
    """The folder the user's app (app.py) is imported from."""
    return (slots or default_slots()).active_app_dir()


def installed_artifact(slots=None):
    """{"size", "md5", "name", "version", "counter"} of the installed bundle or firmware."""
    return (slots or default_slots()).installed_artifact()


def trial_pending(slots=None):
    """The trial record while a new version waits for its verified call home, else None."""
    return (slots or default_slots()).trial()


def last_error(state):
    """The last install or trial failure (text) for x-IAS-LAST-ERROR, or None."""
    return state.get(ERROR_KEY)


def clear_error(state):
    state.drop(ERROR_KEY)


def _record(state, text):
    log.warn("ota", text)
    state.set(ERROR_KEY, text[:120])


def _label(part):
    return part.info()[4] if part is not None else None


def _clock_ok(board):
    from .board import clock_is_sane

    return board.clock_synced or clock_is_sane(board.time())


# -- trial, commit, rollback --------------------------------------------------------------------
def boot_check(board, state, slots=None):
    """Run early in boot.py, before the app is imported. Counts trial boots and rolls back a
    version that crashed, was reset by the watchdog, used up its boots or its 10 minutes.
    Returns None (no trial), "trial" (the new version runs) or "rolled_back"."""
    s = slots or default_slots()
    info = s.read()
    t = info.get("trial")
    if not t:
        return None
    t = dict(t)
    boots = t.get("boots", 0)
    if t.get("kind") == "firmware":
        running = _label(board.running_partition())
        if running != t.get("target"):
            if boots:
                why = "firmware %s failed its trial boot; bootloader went back to %s"
                _restore(s, state, why % (info.get("version"), running))
            else:
                _restore(s, state, "firmware switch to %s did not happen" % t.get("target"))
            return "rolled_back"
        if boots:
            # ESP-IDF grants one trial boot: running it again means it was marked valid and
            # only the pointer update was cut short. Finish that commit.
            _commit_pointer(s, state, info, None)
            return None
    else:
        cause = board.reset_cause()
        if boots and cause in ("crash", "watchdog"):
            rollback(
                board, state, "%s during trial of %s" % (cause, info.get("version")), s, False
            )
            return "rolled_back"
        if boots >= TRIAL_BOOTS:
            why = "%s not confirmed within %d boots" % (info.get("version"), TRIAL_BOOTS)
            rollback(board, state, why, s, False)
            return "rolled_back"
        if _trial_expired(board, t, 0):
            rollback(board, state, "%s not confirmed in time" % info.get("version"), s, False)
            return "rolled_back"
    t["boots"] = boots + 1
    new = dict(info)
    new["trial"] = t
    s.write(new)
    log.info("ota", "trial boot %d of %s %s" % (t["boots"], info.get("name"), info.get("version")))
    return "trial"


def _trial_expired(board, t, uptime_ms):
    if uptime_ms > TRIAL_MS:
        return True
    since = t.get("since", 0)
    if since and _clock_ok(board):
        return board.time() - since > TRIAL_MS // 1000
    return False


def trial_tick(board, state, slots=None):
    """Call from the main loop (cheap). Past the trial deadline without a commit, rolls back
    and resets the board."""
    s = slots or default_slots()
    t = s.trial()
    if t and _trial_expired(board, t, board.uptime_ms()):
        rollback(board, state, "%s not confirmed within 10 minutes" % s.read().get("version"), s)
        return True
    return False


def commit(board, state, settings=None, slots=None):
    """After a verified call home succeeded on the version on trial: keep it. The firmware is
    marked valid, the pointer loses its trial, the security counter floor rises and settings
    app_name/app_version take the new values. Returns the committed artifact or None."""
    s = slots or default_slots()
    info = s.read()
    t = info.get("trial")
    if not t:
        return None
    if t.get("kind") == "firmware":
        part = board.running_partition()
        if _label(part) != t.get("target"):
            return None  # boot_check records this case
        try:
            part.mark_app_valid_cancel_rollback()
        except OSError as e:
            log.warn("ota", "mark_app_valid_cancel_rollback: %r" % e)
    return _commit_pointer(s, state, info, settings)


def _commit_pointer(s, state, info, settings):
    new = dict(info)
    new.pop("trial", None)
    new.pop("prev", None)
    s.write(new)
    from . import trust

    kind = "firmware" if new.get("kind") == "firmware" else "app"
    trust.raise_counter(state, kind, new.get("counter", 0))
    _set_app(s, settings, new.get("name", ""), new.get("version", ""))
    log.info("ota", "committed %s %s" % (new.get("name"), new.get("version")))
    return s.installed_artifact()


def _set_app(s, settings, name, version):
    from . import settings as settings_mod

    data = settings if settings is not None else settings_mod.load(s.settings_path)
    data["app_name"] = name
    data["app_version"] = version
    try:
        settings_mod.save(data, s.settings_path)
    except ValueError as e:
        log.warn("ota", "settings not updated: %s" % e)


def rollback(board, state, reason, slots=None, reset=True):
    """Go back to the previous version: the pointer returns to it (bundles) and, for firmware,
    the reset lets the bootloader abort the unconfirmed image. The reason is kept for the next
    call home. Resets the board when `reset` (always for firmware on trial). Returns False
    when nothing is on trial."""
    s = slots or default_slots()
    t = s.trial()
    if not t:
        return False
    _restore(s, state, "rollback: " + reason)
    if reset or t.get("kind") == "firmware":
        board.reset()
    return True


def _restore(s, state, text):
    info = s.read()
    prev = info.get("prev") or {"active": info.get("active"), "kind": "factory"}
    new = {"active": prev.get("active", info.get("active"))}
    for k in _ART:
        if k in prev:
            new[k] = prev[k]
    if info.get("trial", {}).get("kind") == "firmware":
        new["active"] = info.get("active")  # the app slot did not change
    s.write(new)
    _record(state, text)
    _refuse(state, info.get("md5"))


REFUSED_KEY = "refused_md5"  # artifacts that failed their trial here: not taken again
MAX_REFUSED = 4


def _refuse(state, md5):
    if not md5:
        return
    seen = [m for m in state.get(REFUSED_KEY, []) if m != md5]
    state.set(REFUSED_KEY, (seen + [md5])[-MAX_REFUSED:])


def _artifact(kind, name, version, counter, md5, size):
    return {
        "kind": kind,
        "name": name,
        "version": version,
        "counter": counter,
        "md5": md5,
        "size": size,
    }


def _trial_pointer(s, board, active, art, trial):
    info = s.read()
    prev = {"active": info["active"]}
    for k in _ART:
        if k in info:
            prev[k] = info[k]
    trial["boots"] = 0
    trial["since"] = board.time() if _clock_ok(board) else 0
    new = {"active": active, "prev": prev, "trial": trial}
    new.update(art)
    return new


# -- choosing an installer ----------------------------------------------------------------------
def _get(ctx, name, default=None):
    if isinstance(ctx, dict):
        return ctx.get(name, default)
    return getattr(ctx, name, default)


def installer_for(first_bytes, ctx):
    """The installer for a body starting with `first_bytes`. ctx (object or dict): board,
    settings, state, verified (the TLS connection was verified), optional slots and keys."""
    b = bytes(first_bytes[:263])
    if b[:1] == b"\xe9":
        from .fwimage import FirmwareInstaller

        return FirmwareInstaller(ctx)
    if b[:2] == b"\x1f\x8b" or b[257:262] == b"ustar" or len(b) < 263:
        from .appbundle import BundleInstaller

        return BundleInstaller(ctx)
    raise ReasonError("unknown_format", "neither an app bundle nor an ESP32 app image")


def _get_settings(settings):
    return settings if isinstance(settings, dict) and "app_name" in settings else None


def _unsigned_policy(board, settings, verified, what):
    """An unsigned payload needs TLS that verifies, a verified connection and allow_unsigned."""
    if not board.tls_verifies:
        raise ReasonError("unsigned", "%s: this board cannot verify TLS, only signed" % what)
    if not verified:
        raise ReasonError("unsigned", "%s over a connection that was not verified" % what)
    if not settings.get("allow_unsigned"):
        raise ReasonError("unsigned", "%s refused (settings allow_unsigned is off)" % what)


class _Base:
    def __init__(self, ctx):
        self.board = _get(ctx, "board")
        self.settings = _get(ctx, "settings") or {}
        self.state = _get(ctx, "state")
        self.verified = bool(_get(ctx, "verified", False))
        self.slots = _get(ctx, "slots") or default_slots()
        self.keys = _get(ctx, "keys")
        self.size = 0
        self.got = 0
        self.ready = False

    def _start(self, size, name, version):
        if self.slots.trial():
            if not (self.verified or not self.board.tls_verifies) or self.state is None:
                raise ReasonError("trial_pending", "the version on trial is not committed yet")
            # The server answered the version on trial over verified TLS (or the only kind this
            # board has): that is the call home its trial waits for. Keep it, then go on.
            commit(self.board, self.state, _get_settings(self.settings), self.slots)
        self.size = size
        self.name = name
        self.version = version
