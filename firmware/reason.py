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


# errno -> reason; Linux, lwIP and mbedTLS codes (lwIP and Linux agree on the small ones). A
# function, not a dict: no table is built when the module loads (RAM).
def errno_reason(code):
    """The reason of an errno (or mbedTLS error code), or None when it has none."""
    if code in (11, 110, 115, 116, -0x6800):
        # EAGAIN (unix recv timeout), ETIMEDOUT (ESP32 sockets), EINPROGRESS (a non-blocking
        # connect that did not finish), ETIMEDOUT (some lwIP builds), MBEDTLS_ERR_SSL_TIMEOUT
        return "timeout"
    if code in (104, 107, 128, 32, -0x7280, -0x7880):
        # ECONNRESET, ENOTCONN, ENOTCONN (lwIP), EPIPE, MBEDTLS_ERR_SSL_CONN_EOF and
        # MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY
        return "closed"
    if code == 111:  # ECONNREFUSED
        return "refused"
    if code == 113:  # EHOSTUNREACH
        return "unreachable"
    if code == _ENOSPC:
        return "no_space"
    return None


# mbedTLS verification texts (x509.h) -> reason, in order of precedence when several flags come
# together: a chain we do not trust makes every other finding moot.
def verify_reason(text):
    """The reason for an mbedTLS verification failure text, or None."""
    if "not correctly signed by the trusted CA" in text:
        return "untrusted"
    if "validity has expired" in text:
        return "expired"
    if "starts in the future" in text:
        return "not_yet_valid"
    if "Common Name (CN) does not match" in text:
        return "name_mismatch"
    return None


def errno_of(e):
    """The numeric code of an OSError (MicroPython: args[0]; CPython: errno), or None."""
    code = getattr(e, "errno", None)
    if code is None and e.args and isinstance(e.args[0], int):
        code = e.args[0]
    return code


def reason_of(e, default="error"):
    """The reason code of any exception: a ReasonError's own, an OSError's by the errno table
    ("timed out" without a code is a timeout), MemoryError is no_memory; else `default`."""
    reason = getattr(e, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if isinstance(e, OSError):
        code = errno_of(e)
        reason = errno_reason(code)
        if reason is not None:
            return reason
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
