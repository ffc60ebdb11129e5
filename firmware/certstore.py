# The trust anchors as a connection needs them: PEM (or DER) files in /cert/ (the IAS primary
# keeps its name, iasRootCa.cer) loaded into a verifying tls.SSLContext, and verified
# connections (design §1 rule 6, §6). Parsing certificates (subject, issuer, dates) and
# managing the store (report, add, remove, replace_set, recovery) is certadmin.py, loaded only
# when one of those runs: the boot path and a call home never hold it.
import binascii
import os

from . import board as board_mod
from . import log
from .reason import ReasonError

PENDING = "replace.pending"  # names of a set being installed by replace_set()
STAGE = "staged"  # folder in the store where replace_set() writes the new set first
MAX_FILE = 12288  # bytes of one anchor file (PEM of an 8 KiB DER, with labels)
MAX_ANCHORS = 16  # each costs ~1-2 KiB of TLS heap; see docs/trust-store.md


def _admin():
    from . import certadmin

    return certadmin


def parse_anchor(data, n=None):
    """One certificate (PEM or DER) as a der.Cert (certadmin.parse_anchor)."""
    return _admin().parse_anchor(data, n)


def der_of(data, n):
    """The DER in the first n bytes of an anchor file: the file itself when it is DER, else
    the first PEM block decoded. None when neither (TLS then refuses it, or it is skipped)."""
    view = memoryview(data)[:n]
    if n and data[0] == 0x30:
        return bytes(view)
    b = data.find(b"-----BEGIN CERTIFICATE-----", 0, n)
    e = data.find(b"-----END", b + 1, n) if b >= 0 else -1
    if e < 0:
        return None
    try:
        return binascii.a2b_base64(view[b + 27 : e])
    except ValueError:
        return None


class CertStore:
    # certadmin.py reads these from the store it manages
    PENDING = PENDING
    STAGE = STAGE
    MAX_FILE = MAX_FILE
    MAX_ANCHORS = MAX_ANCHORS

    def __init__(self, root="/cert"):
        self.root = root.rstrip("/") or "/"
        self.expiries = None  # not_after of every CA anchor, read once (certadmin.expiries)
        self.loaded = 0  # anchors the last context() loaded

    def path(self, name):
        return self.root + "/" + name

    def names(self):
        try:
            found = [e[0] for e in os.ilistdir(self.root) if e[0].endswith(".cer")]
        except OSError:
            return []
        found.sort()
        return found

    def ders(self, only=None):
        """(name, DER or None) of every anchor file (or those named in `only`), one at a time
        through one read buffer."""
        names = [n for n in self.names() if only is None or n in only]
        buf = None
        for name in names:
            der = None
            try:
                with open(self.path(name), "rb") as f:
                    size = f.seek(0, 2)
                    if size <= MAX_FILE:
                        f.seek(0)
                        if buf is None or len(buf) < size:
                            buf = bytearray(size)
                        der = der_of(buf, f.readinto(memoryview(buf)[:size]))
            except OSError:
                pass
            yield name, der

    def context(self, only=None):
        """A verifying client context holding every readable anchor (or those named in
        `only`), one DER per call (concatenated DER silently loads only the first; the PyPI
        unix build parses no PEM). mbedTLS takes an anchor as an issuer only when it is a CA
        (certadmin refuses to store any other)."""
        import tls

        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = tls.CERT_REQUIRED
        loaded = 0
        for name, der in self.ders(only):
            if der is None:
                continue
            try:
                ctx.load_verify_locations(der)
                loaded += 1
            except (ValueError, OSError) as e:
                log.warn("cert", "%s not loaded by TLS: %r" % (name, e))
        if not loaded:
            raise ReasonError("no_anchors", "no anchor could be loaded from %s" % self.root)
        self.loaded = loaded
        return ctx

    def earliest_expiry(self, now):
        """not_after of the anchor that expires next (expired ones no longer count), or None.
        The anchors' dates are parsed once (certadmin, then released) and kept until the store
        changes."""
        if self.expiries is None:
            from . import phase

            before = phase.loaded()
            self.expiries = _admin().expiries(self)
            phase.release(before)
        best = None
        for t in self.expiries:
            if t >= now and (best is None or t < best):
                best = t
        return best

    # -- management: certadmin.py -----------------------------------------------------------
    def load(self, name, buf=None):
        """The parsed anchor `name` (a der.Cert; ReasonError when missing or unparsable)."""
        return _admin().load(self, name, buf)

    def report(self, now):
        return _admin().report(self, now)

    def add(self, name, data, now, replace=False):
        """Validate and store one anchor (PEM or DER) as PEM (certadmin.add)."""
        self.expiries = None
        return _admin().add(self, name, data, now, replace)

    def remove(self, name, now):
        """Delete one anchor, unless no usable anchor would remain (certadmin.remove)."""
        self.expiries = None
        _admin().remove(self, name, now)

    def replace_set(self, named_ders, now):
        """Install exactly the anchors [(name, pem_or_der)], power-safe (certadmin)."""
        self.expiries = None
        _admin().replace_set(self, named_ders, now)

    def recover(self):
        """Finish or undo a replace_set() cut by a power loss; drop temp files of cut writes.
        Call at boot; every store operation calls it too. Nothing to do (the usual case)
        loads nothing."""
        try:
            entries = [e[0] for e in os.ilistdir(self.root)]
        except OSError:
            return
        for e in entries:
            if e == PENDING or e == STAGE or e.endswith(".tmp"):
                self.expiries = None
                _admin().recover(self)
                return


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
            raise _failure(e, "read")

    def readinto(self, buf, n=None):
        try:
            if n is None:
                return self.sock.readinto(buf)
            return self.sock.readinto(buf, n)
        except (OSError, ValueError) as e:
            raise _failure(e, "read")

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
            raise _failure(e, "write")
        return done

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _failure(e, what):
    from . import net

    return net.from_exception(e, what)


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
    from . import net

    sock = net.tcp_connect(host, port, timeout_ms)
    try:
        tls_sock = ctx.wrap_socket(sock, server_hostname=host)
    except (OSError, ValueError) as e:
        sock.close()
        raise net.from_exception(e, "handshake with %s" % host)
    return Stream(tls_sock, board.tls_verifies, sock)
