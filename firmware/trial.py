# The trial every new version must pass before it is kept, and its one owner: boot_check()
# counts trial boots and rolls back what crashed or ran out of boots or time; tick() enforces
# the deadline from the main loop; commit() keeps the version (only the device's loop calls it);
# rollback() goes back. Also the refused list (artifacts that failed their trial here), the
# anti-rollback floor in force, and the last install or trial failure for the next call home.
#
# A release is refused by what its signature covers (name, version, counter and the digest of
# its signed manifest: identity()), so the same release re-padded or re-compressed is refused
# too; its transfer MD5 is kept beside it only to refuse the very same bytes before a download.
# A trial that ran out of time or boots while its last contact failed for the network's sake
# (note_contact) is not the release's fault: it is retried, at most NET_RETRIES times. A crash
# or an app that fails (app_failed) is.
#
# The trial's time limit counts the board's own uptime (ticks), never the wall clock: an NTP
# answer far ahead must not end a good release's trial (design §1 rule 7). A trial thus runs
# at most TRIAL_BOOTS boots of at most TRIAL_MS each.
#
# Commit is one atomic step: the pointer written without its trial. The state's counter floor
# is raised after it, as a cache: the floor in force is max(state floor, the committed
# pointer's counter), and boot_check() repairs the cache if a power cut came in between.
from . import log

TRIAL_BOOTS = 3  # boots a new version gets to complete one confirming contact
TRIAL_MS = 600000  # ... and at most this long of uptime in one boot
# State key of the last install or trial failure. Apart from callhome's own "last_error" (which
# the next failed call overwrites), so a rollback is reported even after more failed calls.
ERROR_KEY = "ota_error"
REFUSED_KEY = "refused"  # identities and MD5s that failed their trial here: not taken again
MAX_REFUSED = 8  # four releases: identity and MD5 each
CONTACT_KEY = "trial_contact"  # [artifact key, reason] of the trial's last failed contact
RETRY_KEY = "trial_retry"  # [artifact key, n]: trials of it cut short by the network
NET_RETRIES = 3
# Reasons of a contact that never reached the update source or could not authenticate it (an
# unauthenticated answer, trial_pending or a downgrade, is what a man in the middle can cause):
# the network's doing, not the version on trial's. An app that crashes, or an authenticated
# answer the device refuses, is the release's.
NET_REASONS = (
    "trial_pending",
    "downgrade",
    "no_wifi",
    "no_network",
    "timeout",
    "dns",
    "refused",
    "closed",
    "unreachable",
    "too_slow",
    "deadline",
    "connect_failed",
    "tls_error",
    "clock_unset",
    "untrusted",
    "expired",
    "not_yet_valid",
    "name_mismatch",
)


def pending(slots):
    """The trial record while a new version waits for its confirmation, else None."""
    return slots.trial()


def last_error(state):
    """The last install or trial failure (text) for x-IAS-LAST-ERROR, or None."""
    return state.get(ERROR_KEY)


def clear_error(state):
    state.drop(ERROR_KEY)


def refused(state):
    """Identities (identity()) and MD5s of the artifacts that failed their trial on this
    device (newest last)."""
    return state.get(REFUSED_KEY, []) if state is not None else []


def identity(name, version, counter, digest):
    """What a bundle's signature covers, as one string: name, version, counter and the
    SHA-256 (hex, first 32 digits) of its signed manifest. The refused list keys on it."""
    return "%s %s %d %s" % (name, version, counter, digest[:32])


def _key(info):
    """The refusal key of a pointer record: its signed identity, else (firmware) its MD5."""
    return info.get("id") or info.get("md5")


def _record(state, text):
    log.warn("ota", text)
    state.set(ERROR_KEY, text[:120])


def _refuse(state, info):
    keys = [k for k in (info.get("id"), info.get("md5")) if k]
    if not keys:
        return
    seen = [m for m in refused(state) if m not in keys]
    state.set(REFUSED_KEY, (seen + keys)[-MAX_REFUSED:])


def note_contact(state, slots, reason):
    """The device: a contact with the update source failed with `reason`. While a
    version is on trial this decides what a rollback for want of a confirmation means: the
    network's fault (NET_REASONS) or the release's. Writes only when it changes."""
    info = slots.read()
    if info.get("trial"):
        state.set(CONTACT_KEY, [_key(info), reason])


def app_failed(state):
    """The version on trial failed by itself (a crash, a watchdog reset, an exception from the
    app): whatever the network did, the rollback that follows refuses it. Call before
    rollback()."""
    state.drop(CONTACT_KEY)


def _network_blocked(state, info):
    """The reason when the trial's last contact failed for the network's sake, else None."""
    note = state.get(CONTACT_KEY)
    if note and note[0] == _key(info) and note[1] in NET_REASONS:
        return note[1]
    return None


# -- the anti-rollback floor ------------------------------------------------------------------
def _counter_kind(rec):
    kind = rec.get("kind")
    return "app" if kind == "bundle" else kind


def counter_floor(state, slots, kind):
    """The lowest security counter accepted for `kind` ("app", "firmware"): the state's floor
    or the committed version's counter, whichever is higher."""
    rec = slots.committed()
    own = rec.get("counter", 0) if _counter_kind(rec) == kind else 0
    if state is None:
        return own
    from . import trust

    return max(trust.counter_floor(state, kind), own)


def _raise_floor(state, rec):
    counter = rec.get("counter", 0)
    kind = _counter_kind(rec)
    # Checked here before trust.py (large) is loaded: at most boots the floor is in place.
    if kind in ("app", "firmware") and counter > state.get("counters", {}).get(kind, 0):
        from . import trust

        trust.raise_counter(state, kind, counter)  # writes only when it rises


# -- a new version goes on trial ----------------------------------------------------------------
def artifact(kind, name, version, counter, md5, size, ident=None):
    """The pointer fields of an installed artifact (`ident`: a bundle's identity())."""
    art = {
        "kind": kind,
        "name": name,
        "version": version,
        "counter": counter,
        "md5": md5,
        "size": size,
    }
    if ident:
        art["id"] = ident
    return art


def begin(slots, board, active, art, record):
    """Switch the pointer to `art` in slot `active`, on trial (record: {"kind", ...}), with the
    current version kept as "prev". The one atomic write of an activation."""
    from .slots import FIELDS

    info = slots.read()
    prev = {"active": info["active"]}
    for k in FIELDS:
        if k in info:
            prev[k] = info[k]
    record = dict(record)
    record["boots"] = 0
    # when the trial began, for `ias status` only: the clock never decides a trial's end
    record["since"] = board.time() if _clock_ok(board) else 0
    new = {"active": active, "prev": prev, "trial": record}
    new.update(art)
    slots.write(new)


def _label(part):
    return part.info()[4] if part is not None else None


def _clock_ok(board):
    from .board import clock_is_sane

    return board.clock_synced or clock_is_sane(board.time())


# -- boot, tick, commit, rollback -----------------------------------------------------------------
def boot_check(board, state, slots):
    """Run early at boot, before the app is imported. Repairs the state's counter floor from
    the committed pointer, counts trial boots and rolls back a version that crashed, was
    reset by the watchdog or used up its boots. Returns None (no trial),
    "trial" (the new version runs) or "rolled_back"."""
    info = slots.read()
    _raise_floor(state, slots.committed())  # a cut after a commit's pointer write left it low
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
                _restore(slots, state, why % (info.get("version"), running))
            else:
                # Never reached Python on the new slot: the switch was cut short, or the image
                # panicked at start and the bootloader went back. Both look the same from here.
                why = "firmware %s never started on %s; the bootloader runs %s"
                _restore(slots, state, why % (info.get("version"), t.get("target"), running))
            return "rolled_back"
        if boots:
            # ESP-IDF grants one trial boot: running it again means it was marked valid and
            # only the pointer write was cut short. Finish that commit.
            _commit_pointer(slots, state, info)
            return None
    else:
        cause = board.reset_cause()
        if boots and cause in ("crash", "watchdog"):
            app_failed(state)
            why = "%s during trial of %s" % (cause, info.get("version"))
            rollback(board, state, why, slots, False)
            return "rolled_back"
        if boots >= TRIAL_BOOTS:
            why = "%s not confirmed within %d boots" % (info.get("version"), TRIAL_BOOTS)
            rollback(board, state, why, slots, False)
            return "rolled_back"
    t["boots"] = boots + 1
    new = dict(info)
    new["trial"] = t
    slots.write(new)
    log.info("ota", "trial boot %d of %s %s" % (t["boots"], info.get("name"), info.get("version")))
    return "trial"


def tick(board, state, slots):
    """Call from the main loop (cheap). Past the trial deadline without a commit, rolls back
    and resets the board. Uptime, not the clock: NTP cannot cut a trial short."""
    if slots.trial() and board.uptime_ms() > TRIAL_MS:
        version = slots.read().get("version")
        rollback(board, state, "%s not confirmed within 10 minutes" % version, slots)
        return True
    return False


def commit(board, state, slots):
    """The version on trial is confirmed (its update source answered it): keep it. Firmware is
    marked valid first, then the pointer loses its trial (the commit itself, one atomic
    write), then the state's counter floor follows. Returns the committed artifact or None."""
    info = slots.read()
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
    return _commit_pointer(slots, state, info)


def _commit_pointer(s, state, info):
    new = dict(info)
    new.pop("trial", None)
    new.pop("prev", None)
    s.write(new)  # the commit
    _raise_floor(state, new)
    state.drop(CONTACT_KEY)
    state.drop(RETRY_KEY)
    log.info("ota", "committed %s %s" % (new.get("name"), new.get("version")))
    return s.installed_artifact()


def rollback(board, state, reason, slots, reset=True):
    """Go back to the previous version: the pointer returns to it (bundles) and, for firmware,
    the reset lets the bootloader abort the unconfirmed image. The reason is kept for the next
    call home. Resets the board when `reset` (always for firmware on trial). Returns False
    when nothing is on trial."""
    t = slots.trial()
    if not t:
        return False
    _restore(slots, state, "rollback: " + reason)
    log.flush()
    if reset or t.get("kind") == "firmware":
        board.reset()
    return True


def _restore(s, state, text):
    from .slots import FIELDS

    info = s.read()
    net = _network_blocked(state, info)
    prev = info.get("prev") or {"active": info.get("active"), "kind": "factory"}
    new = {"active": prev.get("active", info.get("active"))}
    for k in FIELDS:
        if k in prev:
            new[k] = prev[k]
    if info.get("trial", {}).get("kind") == "firmware":
        new["active"] = info.get("active")  # the app slot did not change
    s.write(new)
    state.drop(CONTACT_KEY)
    if net is not None and _retry(state, info):
        _record(state, "%s (network: %s; retried later)" % (text, net))
        return
    _record(state, text)
    _refuse(state, info)


def _retry(state, info):
    """Count one more trial of this release cut short by the network; False once it had
    NET_RETRIES of them (then it is refused like any failed trial)."""
    key = _key(info)
    last = state.get(RETRY_KEY)
    n = last[1] if last and last[0] == key else 0
    if n >= NET_RETRIES:
        state.drop(RETRY_KEY)
        return False
    state.set(RETRY_KEY, [key, n + 1])
    return True
