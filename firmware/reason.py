# One shape for the client's failures: a short machine-readable reason code (what callers and
# telemetry use) and an optional detail for people.


class ReasonError(Exception):
    def __init__(self, reason, detail=""):
        # One message argument: MicroPython prints args in tracebacks, CPython str() uses it.
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason
        self.detail = detail


class InstallError(ReasonError):
    """An update could not be staged or installed; the device is unchanged."""


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
