# The trust anchors: PEM files in /cert/ (the IAS primary keeps its name, iasRootCa.cer), a
# verifying tls.SSLContext with every anchor, and verified connections (design §1 rule 6, §6).
# Invariants: every write is atomic; the store never loses its last usable anchor.
import os

from . import board as board_mod
from . import der, fsutil, log, net
from .reason import ReasonError, const, iso_date

_PENDING = "replace.pending"  # names of a set being installed by replace_set()
_STAGE = "staged"  # folder in the store where replace_set() writes the new set first
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
MAX_NAME = const(40)
MAX_FILE = const(12288)  # bytes of one anchor file (PEM of an 8 KiB DER, with labels)
MAX_ANCHORS = const(16)  # each costs ~1-2 KiB of TLS heap; see docs/trust-store.md


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


class CertStore:
    def __init__(self, root="/cert"):
        self.root = root.rstrip("/") or "/"

    def _path(self, name):
        return self.root + "/" + name

    def names(self):
        try:
            found = [e[0] for e in os.ilistdir(self.root) if e[0].endswith(".cer")]
        except OSError:
            return []
        found.sort()
        return found

    def load(self, name, buf=None):
        """The parsed anchor `name` (ReasonError when missing or unparsable). `buf`: a
        bytearray to read the file into, reused across anchors to spare the heap."""
        try:
            with open(self._path(name), "rb") as f:
                size = f.seek(0, 2)
                if size > MAX_FILE:
                    raise ReasonError("oversized", "%s: %d bytes" % (name, size))
                f.seek(0)
                if buf is None or len(buf) < size:
                    buf = bytearray(size)
                got = f.readinto(memoryview(buf)[:size])
        except OSError:
            raise ReasonError("missing", name)
        return parse_anchor(buf, got)

    def _each(self):
        """(name, Cert or None) for every anchor file, one at a time through one read buffer
        (bounded memory); unparsable files give None."""
        names = self.names()
        size = 0
        for name in names:
            try:
                size = max(size, os.stat(self._path(name))[6])
            except OSError:
                pass
        buf = bytearray(min(size, MAX_FILE))
        for name in names:
            try:
                cert = self.load(name, buf)
            except ReasonError as e:
                log.warn("cert", "%s skipped: %s" % (name, e))
                cert = None
            yield name, cert

    def _loaded(self):
        return list(self._each())

    def report(self, now):
        rows = []
        for name, c in self._each():
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

    def earliest_expiry(self, now):
        """not_after of the anchor that expires next (expired ones no longer count), or None."""
        best = None
        for _, c in self._each():
            if c is not None and c.is_ca and c.not_after >= now:
                if best is None or c.not_after < best:
                    best = c.not_after
        return best

    def _check_new(self, cert, now, others):
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

    def add(self, name, data, now, replace=False):
        """Validate and store one anchor (PEM or DER) as PEM. An existing name is refused
        unless replace=True (how the IAS 'get root cert' upload renews iasRootCa.cer)."""
        self.recover()
        check_name(name)
        cert = parse_anchor(data)
        current = self._loaded()
        exists = any(n == name for n, _ in current)
        if exists and not replace:
            raise ReasonError("exists", name)
        others = [(n, c) for n, c in current if n != name]
        self._check_new(cert, now, others)
        if exists and not usable(cert, now):
            if not any(c is not None and usable(c, now) for _, c in others):
                raise ReasonError("last_anchor", "%s would replace the last usable anchor" % name)
        if len(others) + 1 > MAX_ANCHORS:
            raise ReasonError("too_many", "at most %d anchors" % MAX_ANCHORS)
        fsutil.makedirs(self.root)
        fsutil.write_atomic(self._path(name), der.der_to_pem(cert.der))
        log.info("cert", "added %s (%s)" % (name, der.name_text(cert.subject)))
        return cert

    def remove(self, name, now):
        """Delete one anchor, unless no usable anchor would remain. An unreadable file can
        always go: it trusts nothing."""
        self.recover()
        current = self._loaded()
        target = [c for n, c in current if n == name]
        if not target:
            raise ReasonError("missing", name)
        if target[0] is not None:
            left = [c for n, c in current if n != name and c is not None and usable(c, now)]
            if not left:
                raise ReasonError("last_anchor", "%s is the last usable anchor" % name)
        os.remove(self._path(name))
        log.info("cert", "removed %s" % name)

    def replace_set(self, named_ders, now):
        """Install exactly the anchors [(name, pem_or_der)] (expired ones are left out).

        Power-safe in three steps: (1) every new file is written into the staging folder
        /cert/staged/; (2) the intent file replace.pending (the new names) is written
        atomically: the commit point; (3) staged files are renamed over /cert/, then anchors
        not in the new set are removed, then the intent goes. recover() redoes step 3 after a
        cut (each part is idempotent) or, without an intent, drops the staging folder. So the
        live set is the old one until the commit, old and new anchors (each whole) while step 3
        runs, and exactly the new one after; it is never empty and never holds a torn file."""
        self.recover()
        if not named_ders:
            raise ReasonError("no_anchors", "empty set")
        if len(named_ders) > MAX_ANCHORS:
            raise ReasonError("too_many", "at most %d anchors" % MAX_ANCHORS)
        staged = []
        for name, data in named_ders:
            check_name(name)
            cert = parse_anchor(data)
            if any(n == name for n, _ in staged):
                raise ReasonError("duplicate", "name %s twice" % name)
            try:
                self._check_new(cert, now, staged)
            except ReasonError as e:
                if e.reason != "expired":
                    raise
                log.warn("cert", "%s left out: %s" % (name, e))  # useless, but not a bad set
                continue
            staged.append((name, cert))
        if not any(usable(c, now) for _, c in staged):
            raise ReasonError("no_anchors", "no anchor of the new set is usable now")
        stage = self._path(_STAGE)
        fsutil.makedirs(stage)
        for name, cert in staged:
            fsutil.write_atomic(stage + "/" + name, der.der_to_pem(cert.der))
        fsutil.write_atomic(self._path(_PENDING), "\n".join(n for n, _ in staged))
        self.recover()
        log.info("cert", "anchor set replaced: %s" % ", ".join(n for n, _ in staged))

    def recover(self):
        """Finish or undo a replace_set() cut by a power loss; drop temp files of cut writes.
        Call at boot; every store operation calls it too."""
        try:
            entries = [e[0] for e in os.ilistdir(self.root)]
        except OSError:
            return
        for e in entries:
            if e.endswith(".tmp"):
                fsutil.remove(self._path(e))
        stage = self._path(_STAGE)
        if _PENDING not in entries:
            fsutil.rmtree(stage)  # cut before the commit point: the old set stays
            return
        try:
            keep = fsutil.read_bytes(self._path(_PENDING)).decode().split("\n")
        except (OSError, UnicodeError, ValueError):
            keep = []
        for name in keep:
            try:
                check_name(name)
            except ReasonError:
                keep = []
        for name in keep:
            if fsutil.exists(stage + "/" + name):
                os.rename(stage + "/" + name, self._path(name))
        complete = bool(keep)
        for name in keep:
            try:
                self.load(name)
            except ReasonError:
                complete = False
        if complete:  # only then may the old anchors go
            for name in self.names():
                if name not in keep:
                    os.remove(self._path(name))
        else:
            log.warn("cert", "anchor set incomplete; old anchors kept")
        fsutil.rmtree(stage)
        fsutil.remove(self._path(_PENDING))

    def context(self, only=None):
        """A verifying client context holding every readable CA anchor (or those named in
        `only`), one DER per call (concatenated DER silently loads only the first; the PyPI
        unix build parses no PEM)."""
        import tls

        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = tls.CERT_REQUIRED
        loaded = 0
        for name, c in self._each():
            if c is None or not c.is_ca or (only is not None and name not in only):
                continue
            try:
                ctx.load_verify_locations(c.der)
                loaded += 1
            except (ValueError, OSError) as e:
                log.warn("cert", "%s not loaded by TLS: %r" % (name, e))
        if not loaded:
            raise ReasonError("no_anchors", "no anchor could be loaded from %s" % self.root)
        self.loaded = loaded
        return ctx


def unverified_context():
    """Encryption without authentication: only where the port's TLS cannot verify (axTLS)."""
    import tls

    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    if hasattr(tls, "CERT_NONE"):
        ctx.verify_mode = tls.CERT_NONE
    return ctx


class Stream:
    """A connected (TLS) socket: read, readinto, write, close; failures raise ReasonError."""

    def __init__(self, sock, verified, raw=None):
        self.sock = sock  # the TLS socket
        self.raw = raw or sock  # the TCP socket under it: its timeout governs TLS reads too
        self.verified = verified

    def settimeout(self, seconds):
        """Timeout of every later read and write (e.g. what is left of a deadline)."""
        self.raw.settimeout(seconds)

    def read(self, n):
        try:
            return self.sock.read(n)
        except (OSError, ValueError) as e:
            raise net.from_exception(e, "read")

    def readinto(self, buf, n=None):
        try:
            if n is None:
                return self.sock.readinto(buf)
            return self.sock.readinto(buf, n)
        except (OSError, ValueError) as e:
            raise net.from_exception(e, "read")

    def write(self, data):
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                n = self.sock.write(view[done:])
                if not n:
                    raise ReasonError("closed", "write returned %r" % n)
                done += n
        except (OSError, ValueError) as e:
            raise net.from_exception(e, "write")
        return done

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def check_clock(board, floor=0):
    now = board.time()
    if not board.clock_synced:
        raise ReasonError("clock_unset", "the clock was never synced")
    if not board_mod.clock_is_sane(now, floor):
        raise ReasonError("clock_unset", "clock %d is before the build or floor" % now)
    return now


def connect(host, port, store, board, timeout_ms=10000, floor=0, only=None):
    """A TLS stream to host:port verified against the store's anchors (server_hostname=host),
    or only those named in `only`. On ports whose TLS cannot verify (board.tls_verifies False)
    the stream is encrypted only and says so: stream.verified is False. Every failure is a
    ReasonError."""
    if board.tls_verifies:
        check_clock(board, floor)
        try:
            ctx = store.context(only)
        except ReasonError as e:
            raise ReasonError("untrusted", str(e))
    else:
        ctx = unverified_context()
    sock = net.tcp_connect(host, port, timeout_ms)
    try:
        tls_sock = ctx.wrap_socket(sock, server_hostname=host)
    except (OSError, ValueError) as e:
        sock.close()
        raise net.from_exception(e, "handshake with %s" % host)
    return Stream(tls_sock, board.tls_verifies, sock)
