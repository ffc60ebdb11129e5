# Trust continuity (design §1, §6; issue 6): signed anchor bundles, the recovery ladder when TLS
# verification fails, proactive refresh before the earliest anchor expires, update-key rotation.
# The signature by the operator's offline update key, never the channel, authorises a bundle;
# so a bundle may come over plain HTTP. Every write is atomic and the store never holds zero
# usable anchors: a new set is installed next to the old one ("pending") and the old anchors go
# only after a verified call home (confirm), or the new ones go again (revert).
import json
import os

from . import board as board_mod
from . import certstore, der, fsutil, log, trust
from .reason import ReasonError, iso_date, reason_of

MAX_BUNDLE = 16384  # bytes of anchors.json accepted (about 8 roots)
MAX_SIG = 1024  # a 4096-bit signature is 512 bytes, 684 in base64
MAX_KEYS_DOC = 8192
BUNDLE = "anchors.json"
KEYS_DOC = "keys.json"
RATE_S = 6 * 3600  # scheduled ladder walks at most this often; a forced walk always runs
THRESHOLDS = (180, 60, 30)  # days before the earliest anchor expiry: fetch the newest bundle
MAX_PENDING_FAILS = 3  # failed verified call homes with a pending set before it is reverted
MAX_REPORT = 8  # rung lines kept for the next call home
_BUNDLE_FILE = "bundle.json"  # the confirmed bundle and its signature, beside the anchors
_SIG_FILE = "bundle.sig"
_PENDING_FILE = "bundle.pending.json"
_PENDING_SIG = "bundle.pending.sig"


# -- time ------------------------------------------------------------------------------------
def sane_time(board, state):
    """The board's Unix time if NTP set it and it is past the build and the persisted floor;
    None otherwise. Expiry checks never run on an unset clock (it starts at 2000-01-01)."""
    return board_mod.trusted_time(board, state.get("time_floor", 0) if state is not None else 0)


def parse_time(value):
    """Unix seconds from an int or 'YYYY-MM-DD[THH:MM:SS[Z]]'; ReasonError('malformed')."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str) or len(value) not in (10, 19, 20):
        raise ReasonError("malformed", "time %r" % (value,))
    try:
        y, m, d = int(value[0:4]), int(value[5:7]), int(value[8:10])
        hh = mm = ss = 0
        if len(value) > 10:
            hh, mm, ss = int(value[11:13]), int(value[14:16]), int(value[17:19])
    except ValueError:
        raise ReasonError("malformed", "time %r" % value)
    if value[4] != "-" or value[7] != "-" or not (1 <= m <= 12 and 1 <= d <= 31):
        raise ReasonError("malformed", "time %r" % value)
    return der.days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss


# -- bundles ------------------------------------------------------------------------------------
def _sig_bytes(sig):
    # Raw signature bytes; a base64 text file is accepted too (some hosts mangle binaries).
    sig = bytes(sig)
    if len(sig) > MAX_SIG:
        raise ReasonError("oversized", "signature of %d bytes" % len(sig))
    if len(sig) not in (256, 384, 512):
        import binascii

        try:
            return binascii.a2b_base64(sig.strip())
        except ValueError:
            pass
    return sig


def installed_version(state):
    """The version new bundles must exceed: the confirmed one, or a pending one if higher."""
    v = state.get("anchors_version", 0) or 0
    p = state.get("anchors_pending")
    if p and p.get("version", 0) > v:
        v = p["version"]
    return v


def verify_bundle(json_bytes, sig, keys, installed_version, now, host=None):
    """The parsed bundle {version, issued, expires, hosts, certs, raw, sig} when the signature
    verifies with one of `keys`, the version is above `installed_version`, it has not expired
    at `now` (the board's sane time) and at least one anchor is a CA usable now.
    Otherwise ReasonError. Nothing is parsed before the signature is checked."""
    if now is None:
        raise ReasonError("clock_unset", "no sane time to check expiry against")
    if len(json_bytes) > MAX_BUNDLE:
        raise ReasonError("oversized", "bundle of %d bytes" % len(json_bytes))
    sig = _sig_bytes(sig)
    try:
        signer = trust.check(json_bytes, sig, keys)
    except ReasonError as e:
        raise ReasonError(e.reason, e.detail)
    try:
        doc = json.loads(json_bytes)  # bytes or bytearray: no decoded copy of 16 KiB
    except (ValueError, UnicodeError, TypeError) as e:
        raise ReasonError("malformed", "json: %s" % e)
    if not isinstance(doc, dict):
        raise ReasonError("malformed", "not an object")
    version = doc.get("version")
    pems = doc.get("anchors")
    hosts = doc.get("hosts", [])
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ReasonError("malformed", "version")
    if not isinstance(pems, list) or not isinstance(hosts, list):
        raise ReasonError("malformed", "anchors and hosts must be lists")
    if version <= installed_version:
        raise ReasonError("not_newer", "v%d, installed v%d" % (version, installed_version))
    expires = parse_time(doc["expires"]) if doc.get("expires") is not None else None
    issued = parse_time(doc["issued"]) if doc.get("issued") is not None else None
    if expires is not None and expires <= now:
        raise ReasonError("expired", "bundle v%d expired %s" % (version, iso_date(expires)))
    if host is not None and hosts and host not in hosts:
        raise ReasonError("wrong_host", "bundle is for %s" % ", ".join(str(h) for h in hosts))
    if not pems:
        raise ReasonError("no_anchors", "empty anchor list")
    if len(pems) > certstore.MAX_ANCHORS:
        raise ReasonError("too_many", "%d anchors" % len(pems))
    certs = []
    for pem in pems:
        if not isinstance(pem, str):
            raise ReasonError("malformed", "anchor %d is not PEM text" % len(certs))
        try:
            cert = der.load(pem)
        except (ReasonError, TypeError, AttributeError) as e:
            raise ReasonError("malformed", "anchor %d: %s" % (len(certs), e))
        if not cert.is_ca:
            raise ReasonError("not_ca", der.name_text(cert.subject))
        certs.append(cert)
    if not any(c.valid_at(now) for c in certs):
        raise ReasonError("no_anchors", "no anchor of v%d is valid now" % version)
    log.info("anchors", "bundle v%d verified (key %s), %d anchors" % (version, signer, len(certs)))
    return {
        "version": version,
        "issued": issued,
        "expires": expires,
        "hosts": hosts,
        "certs": certs,
        "raw": json_bytes,
        "sig": sig,
    }


def _names_for(certs, store):
    # The same certificate keeps its file name (so an unchanged anchor is not rewritten and
    # iasRootCa.cer keeps its IAS name); a new one is named after its fingerprint.
    known = {}
    for name in store.names():
        try:
            known[store.load(name).sha256] = name
        except ReasonError:
            pass
    return [known.get(c.sha256, "a-%s.cer" % c.sha256[:12]) for c in certs]


def _store_ders(store, names):
    out = []
    for name in names:
        try:
            out.append((name, store.load(name).der))
        except ReasonError:
            pass
    return out


def install_bundle(bundle, store, state, now):
    """Install a verified bundle as the pending set: its anchors are added next to the last
    confirmed set (TLS trusts both meanwhile); confirm() drops the old ones after a verified
    call home, revert() drops the new ones. Order for power cuts: the signed bundle file, then
    the intent in state, then the union into the store (certstore.replace_set)."""
    pending = state.get("anchors_pending")
    old = pending["old"] if pending else store.names()
    new = _names_for(bundle["certs"], store)
    new_set = [(n, c.der) for n, c in zip(new, bundle["certs"])]
    old_set = [(n, d) for n, d in _store_ders(store, old) if n not in new]
    room = certstore.MAX_ANCHORS - len(new_set)
    if len(old_set) > room:  # keep every new anchor; the old ones that fit stay for revert
        log.warn("anchors", "%d old anchors dropped: no room" % (len(old_set) - room))
        old_set = old_set[:room]
    root = store.root
    fsutil.makedirs(root)
    fsutil.write_atomic(root + "/" + _PENDING_FILE, bundle["raw"])
    fsutil.write_atomic(root + "/" + _PENDING_SIG, bundle["sig"])
    state.set(
        "anchors_pending",
        {
            "version": bundle["version"],
            "old": [n for n, _ in old_set] + [n for n in old if n in new],
            "new": new,
            "since": now,
            "fails": 0,
        },
    )
    try:
        store.replace_set(new_set + old_set, now)
    except ReasonError as e:
        _drop_pending(state, store)
        raise ReasonError(e.reason, e.detail)
    log.info("anchors", "bundle v%d pending: %s" % (bundle["version"], ", ".join(new)))
    return new


def resume(state, store, now):
    """At boot: finish a cut store operation, finish a cut confirm(), and make sure a pending
    set is complete in the store (a cut between the intent and the union leaves the new
    anchors missing). `now`: the sane time, or None before NTP (then only the store's own
    recovery runs). True when the union had to be completed."""
    try:
        store.recover()
    except OSError as e:
        # littlefs finishes a cross-folder rename cut by power at its next write; the first
        # recover() may then see the staged file twice (ENOTEMPTY). The second one succeeds.
        log.warn("anchors", "store recovery retried: %r" % e)
        store.recover()
    p = state.get("anchors_pending")
    if p and now is None:
        return False  # anchor validity needs the time: finished on the next call with one
    if not p:  # files of an install cut before its intent was recorded
        fsutil.remove(store.root + "/" + _PENDING_FILE)
        fsutil.remove(store.root + "/" + _PENDING_SIG)
        return False
    if p.get("confirming"):
        _finish_confirm(state, store, now, p)
        return False
    return _complete_union(state, store, now, p)


def _complete_union(state, store, now, p):
    names = store.names()
    if all(n in names for n in p["new"]):
        return False
    raw = _read(store.root + "/" + _PENDING_FILE)
    sig = _read(store.root + "/" + _PENDING_SIG)
    if raw is None or sig is None:
        _drop_pending(state, store)
        return False
    try:
        certs = [der.load(pem) for pem in json.loads(raw.decode())["anchors"]]
    except (ValueError, KeyError, ReasonError) as e:
        log.warn("anchors", "pending bundle unreadable (%s); dropped" % e)
        _drop_pending(state, store)
        return False
    have = _store_ders(store, names)
    add = [(n, c.der) for n, c in zip(p["new"], certs) if n not in names]
    store.replace_set(add + have, now)
    return True


def _read(path):
    try:
        return fsutil.read_bytes(path)
    except OSError:
        return None


def _drop_pending(state, store):
    fsutil.remove(store.root + "/" + _PENDING_FILE)
    fsutil.remove(store.root + "/" + _PENDING_SIG)
    state.drop("anchors_pending")


def confirm(state, store, now):
    """After a verified call home with the pending set in place: keep only the new anchors,
    keep the bundle as bundle.json/.sig and record its version (x-IAS-ANCHORS). The decision
    is written first ("confirming"), so resume() at boot finishes a cut confirm and the old
    set never comes back half-removed. True when something was confirmed."""
    p = state.get("anchors_pending")
    if not p:
        return False
    if not p.get("confirming"):
        if resume(state, store, now):
            return False  # the new set was incomplete: it has not been tried yet
        p = dict(p)
        p["confirming"] = True
        state.set("anchors_pending", p)
    _finish_confirm(state, store, now, p)
    return True


def _finish_confirm(state, store, now, p):
    # Idempotent: every step may be cut and redone.
    store.replace_set(_store_ders(store, p["new"]), now)
    root = store.root + "/"
    for src, dst in ((_PENDING_SIG, _SIG_FILE), (_PENDING_FILE, _BUNDLE_FILE)):
        if fsutil.exists(root + src):
            os.rename(root + src, root + dst)
    state.data["anchors_version"] = p["version"]
    del state.data["anchors_pending"]
    state.save()
    log.info("anchors", "bundle v%d confirmed" % p["version"])


def revert(state, store, now):
    """Back to the last confirmed anchor set (the new bundle never produced a verified call
    home). The reverted version is remembered so scheduled walks do not reinstall it."""
    p = state.get("anchors_pending")
    if not p or p.get("confirming"):  # a confirm already decided wins; resume() finishes it
        return False
    old = _store_ders(store, p["old"])
    try:
        store.replace_set(old, now)
    except ReasonError as e:  # no usable old anchor: keeping the new ones is better
        log.warn("anchors", "revert kept the new anchors: %s" % e)
    fsutil.remove(store.root + "/" + _PENDING_FILE)
    fsutil.remove(store.root + "/" + _PENDING_SIG)
    state.data["anchors_rejected"] = p["version"]
    del state.data["anchors_pending"]
    state.save()
    log.warn("anchors", "bundle v%d reverted" % p["version"])
    return True


def after_call_home(state, store, now, verified_ok, reason=None):
    """Drive the pending set from call-home outcomes: confirm on a verified call home; count
    TLS verification failures and revert after MAX_PENDING_FAILS. Returns 'confirmed',
    'reverted', 'pending' or None (nothing pending)."""
    p = state.get("anchors_pending")
    if not p or now is None:
        return None
    if verified_ok:
        return "confirmed" if confirm(state, store, now) else "pending"
    if reason not in ("untrusted", "expired", "not_yet_valid", "name_mismatch"):
        return "pending"  # the network, not the anchors
    fails = p.get("fails", 0) + 1
    if fails >= MAX_PENDING_FAILS:
        revert(state, store, now)
        return "reverted"
    p = dict(p)
    p["fails"] = fails
    state.set("anchors_pending", p)
    return "pending"


# -- where bundles come from -------------------------------------------------------------------
def recovery_locations(settings):
    """Base URLs (ending in '/') to fetch anchors.json from, in ladder order: the configured
    recovery URLs, else the update server's /ota/anchors/ over HTTPS, then plain HTTP."""
    rec = settings.get("recovery") or []
    if rec:
        return [u if u.endswith("/") else u + "/" for u in rec]
    from . import net, transport

    scheme, host, port, _ = net.parse_url(settings["server"])
    if scheme == "http":
        return ["http://%s/ota/anchors/" % transport.host_header("http", host, port)]
    return [
        "https://%s/ota/anchors/" % transport.host_header("https", host, port),
        "http://%s/ota/anchors/" % transport.host_header("http", host, 80),
    ]


# -- the recovery ladder --------------------------------------------------------------------------
def _server_host(settings):
    try:
        from . import net

        return net.parse_url(settings["server"])[1]
    except (ValueError, KeyError):
        return None


def _try_keys(device, fetch, base, now, keys_dir):
    # A bundle signed by a key we do not know yet: the location may hold a keys.json that a
    # key we do know signed (update-key rotation). True when new keys were installed.
    try:
        doc = fetch(base + KEYS_DOC, MAX_KEYS_DOC)
        sig = fetch(base + KEYS_DOC + ".sig", MAX_SIG)
        rotate_key(doc, sig, trust.load_keys(keys_dir), device.state, now, keys_dir)
        return True
    except Exception as e:
        log.info("anchors", "%s%s: %s" % (base, KEYS_DOC, reason_of(e, type(e).__name__)))
        return False


def _rung(device, fetch, base, now, keys_dir, host, force):
    """One location: fetch, verify, install. Returns the outcome word for the report."""
    state = device.state
    raw = fetch(base + BUNDLE, MAX_BUNDLE)
    sig = fetch(base + BUNDLE + ".sig", MAX_SIG)
    for attempt in (0, 1):
        try:
            bundle = verify_bundle(
                raw, sig, trust.load_keys(keys_dir), installed_version(state), now, host
            )
            break
        except ReasonError as e:
            if (
                e.reason != "bad_signature"
                or attempt
                or not _try_keys(device, fetch, base, now, keys_dir)
            ):
                raise
    if not force and bundle["version"] == state.get("anchors_rejected"):
        raise ReasonError("rejected", "v%d was reverted" % bundle["version"])
    install_bundle(bundle, device.store, state, now)
    return bundle["version"]


def look_for_keys(device, fetch, force=False, keys_dir="/keys"):
    """An update was refused for its signature while TLS still works: perhaps the update key
    rotated. Try keys.json at each recovery location (rate-limited like the ladder unless
    forced). True when a new key was installed, so the caller can call home again."""
    state = device.state
    now = sane_time(device.board, state)
    last = state.get("keys_checked_at")
    if now is None or (not force and last is not None and 0 <= now - last < RATE_S):
        return False
    state.set("keys_checked_at", now)
    for base in recovery_locations(device.settings):
        if _try_keys(device, fetch, base, now, keys_dir):
            return True
    return False


def recover(device, fetch, force=False, why="untrusted", keys_dir="/keys"):
    """The recovery ladder, after TLS verification failed with every anchor (`why`: untrusted
    or expired) or for a refresh. Walks recovery_locations() in order; the first valid newer
    bundle is installed (pending) and the walk stops, so the caller can retry the call home in
    the same cycle. A forced walk ignores the rate limit and tries every rung, installing any
    higher version it meets. Scheduled walks run at most every RATE_S. Returns
    {"outcome": installed | nothing_new | failed | rate_limited | skipped, "version", "report"}."""
    state = device.state
    now = sane_time(device.board, state)
    if now is None:
        log.warn("anchors", "ladder skipped: the clock is not set")
        return {"outcome": "skipped", "reason": "clock_unset", "version": None, "report": []}
    last = state.get("anchors_ladder_at")
    if not force and last is not None and 0 <= now - last < RATE_S:
        return {"outcome": "rate_limited", "next": last + RATE_S, "version": None, "report": []}
    host = _server_host(device.settings)
    report = []
    version = None
    answered = False
    for i, base in enumerate(recovery_locations(device.settings)):
        try:
            v = _rung(device, fetch, base, now, keys_dir, host, force)
        except ReasonError as e:
            word = e.reason
            answered = answered or e.reason in ("not_newer", "rejected")
        except Exception as e:  # ReasonError, ReasonError, OSError: this rung is unreachable
            word = reason_of(e, type(e).__name__)
        else:
            version = v
            word = "installed v%d" % v
        line = "%d %s %s" % (i + 1, base, word)
        log.info("anchors", "ladder (%s): %s" % (why, line))
        report.append(line)
        if version is not None and not force:
            break
    outcome = "installed" if version is not None else ("nothing_new" if answered else "failed")
    keep = (state.get("anchors_report") or [])[-MAX_REPORT:]
    keep = (keep + ["%s@%d %s" % (why, now, outcome)] + report)[-MAX_REPORT:]
    state.update({"anchors_ladder_at": now, "anchors_report": keep})
    return {"outcome": outcome, "version": version, "report": report}


def report_header(state, most=200):
    """The ladder report for the next successful call home (one header value), or None."""
    lines = state.get("anchors_report")
    if not lines:
        return None
    text = "; ".join(lines)
    return text if len(text) <= most else text[-most:]


def report_sent(state):
    """Call after a successful call home carried report_header(): the server has it now."""
    state.drop("anchors_report")


# -- proactive refresh ----------------------------------------------------------------------------
def expiry_countdown(store, now):
    """Whole days until the earliest usable anchor expires, or None (no usable anchor)."""
    t = store.earliest_expiry(now)
    return None if t is None else (t - now) // 86400


def expiry_date(store, now):
    """ISO date of the earliest anchor expiry, for x-IAS-ANCHOR-EXPIRY; or None."""
    t = store.earliest_expiry(now)
    return None if t is None else iso_date(t)


def refresh_due(state, store, now):
    """The threshold (180, 60 or 30 days) whose refresh is due and not done yet for the current
    earliest expiry, or None. Several crossed at once (a long-offline device) fire once."""
    if now is None:
        return None
    t = store.earliest_expiry(now)
    if t is None:
        return None
    days = (t - now) // 86400
    rec = state.get("anchors_refresh") or {}
    done = rec.get("done", []) if rec.get("expiry") == t else []
    due = [th for th in THRESHOLDS if days <= th and th not in done]
    return min(due) if due else None


def mark_refreshed(state, store, now, threshold):
    t = store.earliest_expiry(now)
    rec = state.get("anchors_refresh") or {}
    done = rec.get("done", []) if rec.get("expiry") == t else []
    done = sorted(set(done + [th for th in THRESHOLDS if th >= threshold]))
    state.set("anchors_refresh", {"expiry": t, "done": done})


def refresh(device, fetch, keys_dir="/keys"):
    """If a refresh threshold is due: mark it (once per threshold, even if the walk fails)
    and walk the ladder for a newer bundle. Returns recover()'s result or None."""
    now = sane_time(device.board, device.state)
    th = refresh_due(device.state, device.store, now)
    if th is None:
        return None
    mark_refreshed(device.state, device.store, now, th)
    log.info("anchors", "earliest anchor expires within %d days: refreshing" % th)
    return recover(device, fetch, force=True, why="refresh%d" % th, keys_dir=keys_dir)


# -- update-key rotation --------------------------------------------------------------------------
def rotate_key(doc_bytes, sig, keys, state, now, folder="/keys"):
    """Accept keys.json {"version", "keys": [PEM], "transition_until"} when a current key
    signed it and its version is above the last one. The new keys are written (each
    atomically) beside the old; the old ones are retired once `transition_until` has passed
    (retire_keys). Returns the new key file names; ReasonError otherwise."""
    if now is None:
        raise ReasonError("clock_unset")
    if len(doc_bytes) > MAX_KEYS_DOC:
        raise ReasonError("oversized", "keys document of %d bytes" % len(doc_bytes))
    try:
        signer = trust.check(doc_bytes, _sig_bytes(sig), keys)
    except ReasonError as e:
        raise ReasonError(e.reason, e.detail)
    try:
        doc = json.loads(bytes(doc_bytes).decode())
        version = doc["version"]
        pems = doc["keys"]
        until = parse_time(doc.get("transition_until") or now)
    except (ValueError, UnicodeError, KeyError, TypeError) as e:
        raise ReasonError("malformed", str(e))
    if not isinstance(version, int) or isinstance(version, bool) or not isinstance(pems, list):
        raise ReasonError("malformed", "version / keys")
    last = (state.get("keys_doc") or {}).get("version", 0)
    if version <= last:
        raise ReasonError("not_newer", "keys v%d, have v%d" % (version, last))
    if not pems or len(pems) > 4:
        raise ReasonError("malformed", "1 to 4 keys")
    names = []
    for i, pem in enumerate(pems):
        try:
            trust.key_from_pem(pem)
        except (ReasonError, ValueError, TypeError) as e:
            raise ReasonError("malformed", "key %d: %s" % (i, e))
        names.append("k%d-%d.pub" % (version, i))
    fsutil.makedirs(folder)
    for name, pem in zip(names, pems):
        fsutil.write_atomic(folder + "/" + name, pem)
    state.set("keys_doc", {"version": version, "names": names, "until": until})
    log.info("anchors", "update keys v%d accepted (signed by %s)" % (version, signer))
    retire_keys(state, now, folder)
    return names


def retire_keys(state, now, folder="/keys"):
    """After the transition window, remove update keys the last keys.json did not list; never
    when none of its keys is on disk and usable. Returns the removed file names."""
    doc = state.get("keys_doc")
    if not doc or now is None or now < doc.get("until", 0):
        return []
    present = [k.name + ".pub" for k in trust.load_keys(folder)]
    if not any(n in present for n in doc["names"]):
        return []
    gone = []
    for name in present:
        if name not in doc["names"]:
            os.remove(folder + "/" + name)
            gone.append(name)
    if gone:
        log.info("anchors", "retired update keys %s" % ", ".join(gone))
    return gone
