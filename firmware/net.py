# Connections: one exception type with a reason code, URL parsing, TCP connect, and the one
# place that turns socket and mbedTLS failures into reasons (micropython-facts §1.7).
import socket

from .reason import ReasonError

REASONS = (
    "untrusted",
    "expired",
    "not_yet_valid",
    "name_mismatch",
    "clock_unset",
    "tls_error",
    "timeout",
    "dns",
    "refused",
    "closed",
    "unauthenticated",
)

# errno values: Linux and lwIP agree on these.
_EAGAIN = 11
_ETIMEDOUT = 110
_EINPROGRESS = 115
_ECONNREFUSED = 111
_ECONNRESET = 104
_ENOTCONN = 107
_EPIPE = 32
_TIMEOUTS = (_EAGAIN, _ETIMEDOUT, _EINPROGRESS, -0x6800)  # -0x6800: MBEDTLS_ERR_SSL_TIMEOUT
_CLOSED = (_ECONNRESET, _ENOTCONN, _EPIPE, -0x7280, -0x7880)  # CONN_EOF, PEER_CLOSE_NOTIFY

# mbedTLS verification texts (x509.h) -> reason, in order of precedence when several flags
# come together: a chain we do not trust makes every other finding moot.
_VERIFY_TEXTS = (
    ("not correctly signed by the trusted CA", "untrusted"),
    ("validity has expired", "expired"),
    ("starts in the future", "not_yet_valid"),
    ("Common Name (CN) does not match", "name_mismatch"),
)


class NetError(ReasonError):
    pass


def parse_url(url):
    """(scheme, host, port, path) of an http or https URL; ValueError says what is wrong."""
    if not isinstance(url, str) or not url:
        raise ValueError("bad url: empty")
    sep = url.find("://")
    if sep < 0:
        raise ValueError("bad url %r: no scheme" % url)
    scheme = url[:sep].lower()
    if scheme not in ("http", "https"):
        raise ValueError("bad url %r: scheme must be http or https" % url)
    rest = url[sep + 3 :]
    cut = len(rest)
    for c in "/?#":
        i = rest.find(c)
        if 0 <= i < cut:
            cut = i
    authority, path = rest[:cut], rest[cut:]
    if "@" in authority:
        raise ValueError("bad url %r: credentials in URLs are not supported" % url)
    port = 443 if scheme == "https" else 80
    if authority.startswith("["):  # IPv6 literal
        close = authority.find("]")
        if close < 0:
            raise ValueError("bad url %r: unclosed [" % url)
        host, tail = authority[1:close], authority[close + 1 :]
    else:
        colon = authority.find(":")
        host, tail = (authority, "") if colon < 0 else (authority[:colon], authority[colon:])
    if tail:
        if not tail.startswith(":") or not tail[1:].isdigit():
            raise ValueError("bad url %r: bad port" % url)
        port = int(tail[1:])
        if not 0 < port < 65536:
            raise ValueError("bad url %r: port out of range" % url)
    if not host:
        raise ValueError("bad url %r: no host" % url)
    for c in host:
        if c in " \t\r\n" or ord(c) < 33 or ord(c) > 126:
            raise ValueError("bad url %r: bad character in host" % url)
    if "#" in path:
        path = path[: path.find("#")]
    if not path or path[0] != "/":
        path = "/" + path
    return scheme, host, port, path


def errno_of(e):
    """The numeric code of an OSError (MicroPython: args[0]; CPython: errno)."""
    code = getattr(e, "errno", None)
    if code is None and e.args and isinstance(e.args[0], int):
        code = e.args[0]
    return code


def tcp_connect(host, port, timeout_ms):
    """A connected socket with a timeout on every operation, or NetError (dns, refused,
    timeout)."""
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except OSError as e:
        raise NetError("dns", "%s: %r" % (host, e))
    if not infos:
        raise NetError("dns", "%s: no address" % host)
    ai = infos[0]
    sock = socket.socket(ai[0], socket.SOCK_STREAM)
    sock.settimeout(timeout_ms / 1000)
    try:
        sock.connect(ai[-1])
    except OSError as e:
        sock.close()
        code = errno_of(e)
        if code in _TIMEOUTS:
            raise NetError("timeout", "connect %s:%d" % (host, port))
        raise NetError("refused", "connect %s:%d errno %s" % (host, port, code))
    return sock


def verify_reason(text):
    """The reason for an mbedTLS verification text, or None."""
    for needle, reason in _VERIFY_TEXTS:
        if needle in text:
            return reason
    return None


def from_exception(e, doing="tls"):
    """A NetError for any failure of a TLS (or plain) socket: handshake, read or write."""
    if isinstance(e, NetError):
        return e
    if isinstance(e, ValueError):
        # Verification failures: the message is the flag texts, one a line.
        text = " ".join(str(a) for a in e.args)
        flat = " / ".join(line for line in text.split("\n") if line)
        reason = verify_reason(text)
        return NetError(reason or "tls_error", "%s: %s" % (doing, flat))
    if isinstance(e, OSError):
        code = errno_of(e)
        if code in _TIMEOUTS:
            return NetError("timeout", "%s: %r" % (doing, e))
        if code in _CLOSED:
            return NetError("closed", "%s: %r" % (doing, e))
        return NetError("tls_error", "%s: %r" % (doing, e))
    return NetError("tls_error", "%s: %r" % (doing, e))
