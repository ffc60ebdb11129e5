# A signed anchor set document (anchors.json and its signature; design §6): checked against the
# update keys, parsed and judged (version, expiry, host, usable CA anchors). Pure: nothing here
# writes to flash; anchortx.py installs what this verified.
import json

from . import certstore, der, log, trust
from .reason import ReasonError, const, days_from_civil, iso_date

MAX_BUNDLE = const(16384)  # bytes of anchors.json accepted (about 8 roots)
MAX_SIG = const(1024)  # a 4096-bit signature is 512 bytes, 684 in base64


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
    return days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss


def signature_bytes(sig):
    """Raw signature bytes; a base64 text file is accepted too (some hosts mangle binaries)."""
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
    sig = signature_bytes(sig)
    signer = trust.check(json_bytes, sig, keys)
    try:
        doc = json.loads(json_bytes)  # bytes or bytearray: no decoded copy of 16 KiB
    except (ValueError, UnicodeError, TypeError) as e:
        raise ReasonError("malformed", "json: %s" % e)
    if not isinstance(doc, dict):
        raise ReasonError("malformed", "not an object")
    trust.check_kind(doc, "anchors")
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
