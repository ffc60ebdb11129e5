# The trust store's management (certstore.CertStore delegates here, loaded only when used):
# each anchor parsed (subject, issuer, dates, CA), the report, add, remove, replace_set and
# the recovery of a cut replace_set. Invariants: every write is atomic; the store never loses
# its last usable anchor. What a connection needs (the anchors' DER into a tls.SSLContext)
# is certstore.py, which does without this module and der.py.
import os

from . import der, fsutil, log
from .reason import ReasonError, const, iso_date

MAX_NAME = const(40)
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."


def check_name(name):
    if not isinstance(name, str) or not name.endswith(".cer") or len(name) > MAX_NAME:
        raise ReasonError(
            "bad_name", "%r: a name ending in .cer, at most %d chars" % (name, MAX_NAME)
        )
    if name.startswith(".") or len(name) < 5:
        raise ReasonError("bad_name", "%r" % name)
    for c in name:
        if c not in _NAME_CHARS:
            raise ReasonError("bad_name", "%r: letters, digits, '_', '-', '.' only" % name)


def parse_anchor(data, n=None):
    """One certificate (PEM or DER) as a der.Cert, or ReasonError with ReasonError's reason."""
    try:
        return der.load(data, n)
    except ReasonError as e:
        reason = e.reason if e.reason in ("truncated", "oversized") else "garbage"
        raise ReasonError(reason, str(e))


def usable(cert, now):
    return cert.is_ca and cert.valid_at(now)


def load(store, name, buf=None):
    """The parsed anchor `name` (ReasonError when missing or unparsable). `buf`: a bytearray
    to read the file into, reused across anchors to spare the heap."""
    try:
        with open(store.path(name), "rb") as f:
            size = f.seek(0, 2)
            if size > store.MAX_FILE:
                raise ReasonError("oversized", "%s: %d bytes" % (name, size))
            f.seek(0)
            if buf is None or len(buf) < size:
                buf = bytearray(size)
            got = f.readinto(memoryview(buf)[:size])
    except OSError:
        raise ReasonError("missing", name)
    return parse_anchor(buf, got)


def each(store):
    """(name, Cert or None) for every anchor file, one at a time through one read buffer
    (bounded memory); unparsable files give None."""
    names = store.names()
    size = 0
    for name in names:
        try:
            size = max(size, os.stat(store.path(name))[6])
        except OSError:
            pass
    buf = bytearray(min(size, store.MAX_FILE))
    for name in names:
        try:
            cert = load(store, name, buf)
        except ReasonError as e:
            log.warn("cert", "%s skipped: %s" % (name, e))
            cert = None
        yield name, cert


def report(store, now):
    rows = []
    for name, c in each(store):
        if c is None:
            rows.append({"name": name, "usable": False, "error": "unreadable"})
            continue
        rows.append(
            {
                "name": name,
                "subject": der.name_text(c.subject),
                "issuer": der.name_text(c.issuer),
                "not_before": c.not_before,
                "not_after": c.not_after,
                "valid_until": iso_date(c.not_after),
                "days_left": (c.not_after - now) // 86400,
                "sha256": c.sha256,
                "is_ca": c.is_ca,
                "usable": usable(c, now),
            }
        )
    return rows


def expiries(store):
    """not_after of every CA anchor (what earliest_expiry needs, kept by the store)."""
    return tuple(c.not_after for _, c in each(store) if c is not None and c.is_ca)


def _check_new(cert, now, others):
    if not cert.is_ca:
        raise ReasonError(
            "not_ca", "%s is not a CA (a server certificate?)" % der.name_text(cert.subject)
        )
    if cert.not_after < now:
        raise ReasonError(
            "expired",
            "%s expired on %s" % (der.name_text(cert.subject), iso_date(cert.not_after)),
        )
    for name, c in others:
        if c is not None and c.sha256 == cert.sha256:
            raise ReasonError("duplicate", "same certificate as %s" % name)


def add(store, name, data, now, replace=False):
    """Validate and store one anchor (PEM or DER) as PEM. An existing name is refused unless
    replace=True (how the IAS 'get root cert' upload renews iasRootCa.cer)."""
    recover(store)
    check_name(name)
    cert = parse_anchor(data)
    current = list(each(store))
    exists = any(n == name for n, _ in current)
    if exists and not replace:
        raise ReasonError("exists", name)
    others = [(n, c) for n, c in current if n != name]
    _check_new(cert, now, others)
    if exists and not usable(cert, now):
        if not any(c is not None and usable(c, now) for _, c in others):
            raise ReasonError("last_anchor", "%s would replace the last usable anchor" % name)
    if len(others) + 1 > store.MAX_ANCHORS:
        raise ReasonError("too_many", "at most %d anchors" % store.MAX_ANCHORS)
    fsutil.makedirs(store.root)
    fsutil.write_atomic(store.path(name), der.der_to_pem(cert.der))
    log.info("cert", "added %s (%s)" % (name, der.name_text(cert.subject)))
    return cert


def remove(store, name, now):
    """Delete one anchor, unless no usable anchor would remain. An unreadable file can always
    go: it trusts nothing."""
    recover(store)
    current = list(each(store))
    target = [c for n, c in current if n == name]
    if not target:
        raise ReasonError("missing", name)
    if target[0] is not None:
        left = [c for n, c in current if n != name and c is not None and usable(c, now)]
        if not left:
            raise ReasonError("last_anchor", "%s is the last usable anchor" % name)
    os.remove(store.path(name))
    log.info("cert", "removed %s" % name)


def replace_set(store, named_ders, now):
    """Install exactly the anchors [(name, pem_or_der)] (expired ones are left out).

    Power-safe in three steps: (1) every new file is written into the staging folder
    /cert/staged/; (2) the intent file replace.pending (the new names) is written atomically:
    the commit point; (3) staged files are renamed over /cert/, then anchors not in the new
    set are removed, then the intent goes. recover() redoes step 3 after a cut (each part is
    idempotent) or, without an intent, drops the staging folder. So the live set is the old
    one until the commit, old and new anchors (each whole) while step 3 runs, and exactly the
    new one after; it is never empty and never holds a torn file."""
    recover(store)
    if not named_ders:
        raise ReasonError("no_anchors", "empty set")
    if len(named_ders) > store.MAX_ANCHORS:
        raise ReasonError("too_many", "at most %d anchors" % store.MAX_ANCHORS)
    staged = []
    for name, data in named_ders:
        check_name(name)
        cert = parse_anchor(data)
        if any(n == name for n, _ in staged):
            raise ReasonError("duplicate", "name %s twice" % name)
        try:
            _check_new(cert, now, staged)
        except ReasonError as e:
            if e.reason != "expired":
                raise
            log.warn("cert", "%s left out: %s" % (name, e))  # useless, but not a bad set
            continue
        staged.append((name, cert))
    if not any(usable(c, now) for _, c in staged):
        raise ReasonError("no_anchors", "no anchor of the new set is usable now")
    stage = store.path(store.STAGE)
    fsutil.makedirs(stage)
    for name, cert in staged:
        fsutil.write_atomic(stage + "/" + name, der.der_to_pem(cert.der))
    fsutil.write_atomic(store.path(store.PENDING), "\n".join(n for n, _ in staged))
    recover(store)
    log.info("cert", "anchor set replaced: %s" % ", ".join(n for n, _ in staged))


def recover(store):
    """Finish or undo a replace_set() cut by a power loss; drop temp files of cut writes."""
    try:
        entries = [e[0] for e in os.ilistdir(store.root)]
    except OSError:
        return
    for e in entries:
        if e.endswith(".tmp"):
            fsutil.remove(store.path(e))
    stage = store.path(store.STAGE)
    if store.PENDING not in entries:
        fsutil.rmtree(stage)  # cut before the commit point: the old set stays
        return
    try:
        keep = fsutil.read_bytes(store.path(store.PENDING)).decode().split("\n")
    except (OSError, UnicodeError, ValueError):
        keep = []
    for name in keep:
        try:
            check_name(name)
        except ReasonError:
            keep = []
    for name in keep:
        if fsutil.exists(stage + "/" + name):
            os.rename(stage + "/" + name, store.path(name))
    complete = bool(keep)
    for name in keep:
        try:
            load(store, name)
        except ReasonError:
            complete = False
    if complete:  # only then may the old anchors go
        for name in store.names():
            if name not in keep:
                os.remove(store.path(name))
    else:
        log.warn("cert", "anchor set incomplete; old anchors kept")
    fsutil.rmtree(stage)
    fsutil.remove(store.path(store.PENDING))
