# The anchor-set transaction on the certificate store (design §1 rule 8, §4, §6): a verified
# set is installed next to the old one ("pending"), TLS trusts both meanwhile, and the old
# anchors go only once a call home verified through the new set's own anchors (confirm). Every
# step is atomic and may be cut by power; resume() at boot finishes what a cut left.
import json
import os

from . import certstore, der, fsutil, log
from .reason import ReasonError

# The bundle files beside the anchors: the confirmed one and the pending one, with signatures.
_BUNDLE_FILE = "bundle.json"
_SIG_FILE = "bundle.sig"
_PENDING_FILE = "bundle.pending.json"
_PENDING_SIG = "bundle.pending.sig"


def names_for(certs, store):
    """The store file names for `certs`: the same certificate keeps its file name (so an
    unchanged anchor is not rewritten and iasRootCa.cer keeps its IAS name); a new one is
    named after its fingerprint."""
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
    confirmed set (TLS trusts both meanwhile); confirm() drops the old ones once the new ones
    verified a call home. Order for power cuts: the signed bundle file, then
    the intent in state, then the union into the store (certstore.replace_set)."""
    pending = state.get("anchors_pending")
    old = pending["old"] if pending else store.names()
    new = names_for(bundle["certs"], store)
    new_set = [(n, c.der) for n, c in zip(new, bundle["certs"])]
    old_set = [(n, d) for n, d in _store_ders(store, old) if n not in new]
    room = certstore.MAX_ANCHORS - len(new_set)
    if len(old_set) > room:  # keep every new anchor; the old ones that fit stay
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
    except ReasonError:
        _drop_pending(state, store)
        raise
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
        _remove_pending_files(store)
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


def _remove_pending_files(store):
    fsutil.remove(store.root + "/" + _PENDING_FILE)
    fsutil.remove(store.root + "/" + _PENDING_SIG)


def _drop_pending(state, store):
    _remove_pending_files(store)
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


def after_call_home(state, store, now, verified_ok, by_new=True):
    """Drive the pending set from call-home outcomes (design §1 rules 7, 8): it is confirmed
    only by a verified call home whose peer an anchor of the new set verified (`by_new`), so
    the anchor that verified the last good call home stays until the server verifies under the
    new set. A call home verified by the old anchors (the server has not moved yet) or a
    failed handshake (perhaps a man in the middle) leaves it pending: nothing unauthenticated
    reverts or rejects a signed set. Returns 'confirmed', 'pending' or None (nothing pending)."""
    p = state.get("anchors_pending")
    if not p or now is None:
        return None
    if verified_ok and by_new:
        return "confirmed" if confirm(state, store, now) else "pending"
    return "pending"
