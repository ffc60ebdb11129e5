# The client's one error model: one exception type carrying a short machine-readable reason code
# (what callers, the call home's outcome and telemetry use) and a detail for people; one errno
# table; one function from any exception to a reason.
try:
    from micropython import const
except ImportError:  # CPython (host tools and fuzz tests import the firmware)

    def const(x):
        return x


_ENOSPC = const(28)


class ReasonError(ValueError):
    """A failure with a reason code. A ValueError, so code that refuses bad input by catching
    ValueError also catches the client's own refusals (a bad DER, tar, signature, setting)."""

    def __init__(self, reason, detail=""):
        # One message argument: MicroPython prints args in tracebacks, CPython str() uses it.
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason
        self.detail = detail


# errno -> reason; Linux, lwIP and mbedTLS codes (lwIP and Linux agree on the small ones).
ERRNO_REASONS = {
    11: "timeout",  # EAGAIN: no data before the socket timeout (unix recv)
    110: "timeout",  # ETIMEDOUT (stream sockets on ESP32)
    115: "timeout",  # EINPROGRESS: a non-blocking connect that did not finish
    116: "timeout",  # ETIMEDOUT on some lwIP builds
    -0x6800: "timeout",  # MBEDTLS_ERR_SSL_TIMEOUT
    104: "closed",  # ECONNRESET
    107: "closed",  # ENOTCONN
    128: "closed",  # ENOTCONN (lwIP)
    32: "closed",  # EPIPE
    -0x7280: "closed",  # MBEDTLS_ERR_SSL_CONN_EOF
    -0x7880: "closed",  # MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY
    111: "refused",  # ECONNREFUSED
    113: "unreachable",  # EHOSTUNREACH
    _ENOSPC: "no_space",
}

# mbedTLS verification texts (x509.h) -> reason, in order of precedence when several flags come
# together: a chain we do not trust makes every other finding moot.
VERIFY_TEXTS = (
    ("not correctly signed by the trusted CA", "untrusted"),
    ("validity has expired", "expired"),
    ("starts in the future", "not_yet_valid"),
    ("Common Name (CN) does not match", "name_mismatch"),
)


def errno_of(e):
    """The numeric code of an OSError (MicroPython: args[0]; CPython: errno), or None."""
    code = getattr(e, "errno", None)
    if code is None and e.args and isinstance(e.args[0], int):
        code = e.args[0]
    return code


def verify_reason(text):
    """The reason for an mbedTLS verification failure text, or None."""
    for needle, reason in VERIFY_TEXTS:
        if needle in text:
            return reason
    return None


def reason_of(e, default="error"):
    """The reason code of any exception: a ReasonError's own, an OSError's by the errno table
    ("timed out" without a code is a timeout), MemoryError is no_memory; else `default`."""
    reason = getattr(e, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if isinstance(e, OSError):
        code = errno_of(e)
        if code in ERRNO_REASONS:
            return ERRNO_REASONS[code]
        if code is None and "timed out" in str(e):
            return "timeout"
        return "io_error"
    if isinstance(e, MemoryError):
        return "no_memory"
    return default


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (no time.mktime: ports differ)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def iso_date(t):
    """YYYY-MM-DD of Unix seconds, by civil-from-days arithmetic (the ESP ports' time module
    counts from 2000, the unix port's from 1970: this needs neither)."""
    z = t // 86400 + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return "%04d-%02d-%02d" % (yoe + era * 400 + (m <= 2), m, d)
