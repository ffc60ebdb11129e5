# Connections: one exception type with a reason code, URL parsing, TCP connect, and the one
# place that turns socket and mbedTLS failures into reasons (micropython-facts §1.7).
import socket

from .reason import ReasonError, errno_of, reason_of, verify_reason

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


def tcp_connect(host, port, timeout_ms):
    """A connected socket with a timeout on every operation, or ReasonError (dns, refused,
    timeout)."""
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except OSError as e:
        raise ReasonError("dns", "%s: %r" % (host, e))
    if not infos:
        raise ReasonError("dns", "%s: no address" % host)
    ai = infos[0]
    sock = socket.socket(ai[0], socket.SOCK_STREAM)
    sock.settimeout(timeout_ms / 1000)
    try:
        sock.connect(ai[-1])
    except OSError as e:
        sock.close()
        why = "timeout" if reason_of(e) == "timeout" else "refused"
        raise ReasonError(why, "connect %s:%d errno %s" % (host, port, errno_of(e)))
    return sock


def from_exception(e, doing="tls"):
    """A ReasonError for any failure of a TLS (or plain) socket: handshake, read or write."""
    if isinstance(e, ReasonError):
        return e
    if isinstance(e, ValueError):
        # Verification failures: the message is the flag texts, one a line.
        text = " ".join(str(a) for a in e.args)
        flat = " / ".join(line for line in text.split("\n") if line)
        reason = verify_reason(text)
        return ReasonError(reason or "tls_error", "%s: %s" % (doing, flat))
    if isinstance(e, OSError):
        why = reason_of(e)
        if why not in ("timeout", "closed"):
            why = "tls_error"
        return ReasonError(why, "%s: %r" % (doing, e))
    return ReasonError("tls_error", "%s: %r" % (doing, e))
