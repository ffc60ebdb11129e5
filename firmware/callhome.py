# One IAS call home (reference: ias-protocol.md §1, §6): the exact request, the update
# decision, the body streamed to an installer with MD5 and SHA-256 computed on the way, and the
# /ota/logs announce. Every request goes through a transport.Transport (tests give it fake
# streams); the answer is trusted when it came over TLS verified with the anchors.
import binascii
import hashlib

from . import httpclient, trial
from .installer import abort_quietly, new_md5
from .reason import ReasonError, iso_date, reason_of

IASLIB = "2.1.0-RC5.1"  # the IAS library version we speak for (x-ESP_IASLIB)
UPDATE_PATH = "/ota/updates?"  # IAS always appends "?" and an empty argument list
LOG_PATH = "/ota/logs?msg="
BUF_SIZE = 1024  # the one buffer: response head and body chunks (IAS uses 1024 on ESP8266)
PEEK = 512  # body bytes shown to make_installer: enough for a tar header
HEAD_TIMEOUT_MS = 5000  # as IAS: first response byte within 5 s
READ_TIMEOUT_MS = 10000  # every later read
DEADLINE_MS = 60000  # connect and response head; the body's deadline scales with its length
MAX_RETRY_AFTER = 7 * 86400


def _clean(value):
    # Header values come from settings and the board; never let one break the request.
    text = str(value)
    if "\r" in text or "\n" in text or "\x00" in text:
        text = text.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
    return text


def ias_headers(board, settings, installed, mode="sketch", telemetry=None):
    """The IAS header list (after Host), names and order as IAS 2.1 sends them (§1.3), then our
    telemetry (x-IAS-*) and Connection: close last, as IAS ends its request."""
    ip = board.wifi_ip() or "0.0.0.0"
    # The running version, also while it is on trial: the slot pointer's (slots.py).
    version = "%s v%s" % (installed.get("name", ""), installed.get("version", ""))
    heads = [
        ("User-Agent", "ESP-http-Update"),
        ("x-ESP-STA-MAC", board.mac()),
        ("x-ESP-ACT-ID", settings.get("act_code", "")),
        ("x-ESP-LOCIP", ip),
        ("x-ESP-FREE-SPACE", "%d" % board.fs_free()),
        ("x-ESP-SKETCH-SIZE", "%d" % installed.get("size", 0)),
        ("x-ESP-SKETCH-MD5", installed.get("md5", "").lower()),
        ("x-ESP-FLASHCHIP-ID", "%d" % board.flash_id()),
        ("x-ESP-CHIP-ID", "%d" % board.chip_id()),
        ("x-ESP-CORE-VERSION", board.core_version()),
        ("x-ESP_IASLIB", IASLIB),
        ("x-ESP-FLASHCHIP-SIZE", "%d" % board.flash_size()),
        ("x-ESP-VERSION", version),
        ("x-ESP-MODE", mode),
    ]
    tel = telemetry or {}
    for key, name in (
        ("anchors", "x-IAS-ANCHORS"),
        ("anchor_expiry", "x-IAS-ANCHOR-EXPIRY"),
        ("last_error", "x-IAS-LAST-ERROR"),
        ("recovery", "x-IAS-RECOVERY"),
    ):
        if tel.get(key) is not None:
            heads.append((name, tel[key]))
    heads.append(("Connection", "close"))
    return [(n, _clean(v)) for n, v in heads]


def retry_after(resp):
    """Retry-After in seconds (the delta form; an HTTP date is ignored), capped; or None."""
    value = resp.header("retry-after")
    if value is None or not value.isdigit() or len(value) > 9:
        return None
    n = int(value)
    return n if n < MAX_RETRY_AFTER else MAX_RETRY_AFTER


def _is_md5(text):
    if len(text) != 32:
        return False
    for c in text.lower():
        if c not in "0123456789abcdef":
            return False
    return True


def decide(resp):
    """What the response head means: (outcome, reason, update) where update is
    {"size", "name", "version", "md5"} only for an update (§1.4)."""
    if resp.status == 304:
        return "up-to-date", resp.reason or "Not Modified", None
    if resp.status != 200:
        return "no-update", resp.reason or str(resp.status), None
    name = resp.header("x-name", "")
    version = resp.header("x-ver", "")
    md5 = resp.header("x-md5", "")
    if not resp.length or not name or not version or not _is_md5(md5):
        # IAS: "file header verification failed"; an error here, so it is reported and retried
        return "error", "bad_update_head", None
    return (
        "update",
        "",
        {"size": resp.length, "name": name, "version": version, "md5": md5.lower()},
    )


class _Hasher:
    """The body sink: hashes and hands each chunk to the installer."""

    def __init__(self, installer, feed):
        self.installer = installer
        self.feed = feed
        self.md5 = new_md5()
        self.sha = hashlib.sha256()
        self.count = 0

    def __call__(self, chunk):
        if self.md5 is not None:
            self.md5.update(chunk)
        self.sha.update(chunk)
        self.installer.write(chunk)
        self.count += len(chunk)
        if self.feed is not None:
            self.feed()


def download(
    resp,
    update,
    make_installer,
    deadline=None,
    feed=None,
    timeout_ms=READ_TIMEOUT_MS,
    trusted=False,
):
    """Stream the body of an accepted update into an installer chosen from its first bytes
    (make_installer(first, trusted): trusted, the answer came over verified TLS).
    Returns (installer, md5_hex, sha256_hex) (md5_hex: x-MD5 itself where the build has no MD5);
    on any failure the installer is aborted and the exception (with a reason) propagates."""
    first = resp.peek(PEEK if update["size"] > PEEK else update["size"], deadline, timeout_ms)
    installer = make_installer(first, trusted)
    try:
        installer.begin(update["size"], update["name"], update["version"])
        sink = _Hasher(installer, feed)
        resp.read_body(sink, update["size"], deadline, timeout_ms)
        sha = binascii.hexlify(sink.sha.digest()).decode()
        if sink.md5 is None:  # no MD5 on this build: x-MD5 names the artifact, nothing more
            md5 = update["md5"]
        else:
            md5 = binascii.hexlify(sink.md5.digest()).decode()
        if md5 != update["md5"]:
            raise ReasonError("md5_mismatch", "got %s, x-MD5 %s" % (md5, update["md5"]))
        installer.finish(md5, sha)
    except BaseException:
        abort_quietly(installer)
        raise
    return installer, md5, sha


def check(resp, make_installer, feed=None, read_timeout_ms=READ_TIMEOUT_MS, refused=()):
    """Decide on the answer to the update request and install an update if one comes. Returns
    the outcome dict (never raises for network or server faults)."""
    out = {"outcome": "error", "reason": "", "status": resp.status, "app": None}
    out["retry_after"] = retry_after(resp)
    try:
        outcome, reason, update = decide(resp)
        out["outcome"], out["reason"] = outcome, reason
        if update is None:
            return out
        out["app"] = {"name": update["name"], "version": update["version"]}
        if update["md5"] in refused:
            # This artifact failed its trial here before: do not take it again.
            out["outcome"], out["reason"] = "no-update", "refused: failed its trial before"
            return out
        out["outcome"] = "error"
        installer, md5, sha = download(
            resp, update, make_installer, None, feed, read_timeout_ms, resp.verified
        )
        out.update({"outcome": "updated", "reason": "", "size": update["size"]})
        out.update({"md5": md5, "sha256": sha, "installer": installer})
    except Exception as e:
        out["outcome"] = "error"
        out["reason"] = reason_of(e, "install_error")
        out["detail"] = str(e)
        if out["reason"] == "failed_trial":
            # the same signed release in other bytes (its manifest told): as refused above
            out["outcome"], out["reason"] = "no-update", "refused: failed its trial before"
    return out


# -- the device layer: settings, state, trust store -------------------------------------------


def telemetry(device):
    """Our x-IAS-* values: anchor set version, earliest anchor expiry, last failure reason
    (a call-home error, or an install or trial that failed), and the recovery-ladder report."""
    st = device.state
    tel = {}
    if st is not None:
        tel["anchors"] = st.get("anchors_version")
        errors = [e for e in (trial.last_error(st), st.get("last_error")) if e]
        tel["last_error"] = "; ".join(errors) if errors else None
        if st.get("anchors_report"):
            tel["recovery"] = _recovery_report(st)
    if device.store is not None:
        try:
            t = device.store.earliest_expiry(device.board.time())
            if t is not None:
                tel["anchor_expiry"] = iso_date(t)
        except Exception:
            pass
    return tel


def _recovery_report(state):
    try:
        from . import anchors
    except ImportError:
        return None
    return anchors.report_header(state) or None


def _url(device, path):
    # The IAS paths hang off the server's origin (a path in the setting is ignored, as IAS does).
    from . import net, transport

    scheme, host, port, _ = net.parse_url(device.settings["server"])
    return transport.origin(scheme, host, port) + path


def call_home(
    device,
    transport,
    make_installer,
    installed=None,
    mode="sketch",
    feed=None,
    deadline_ms=DEADLINE_MS,
    buf=None,
):
    """One call home for a Device (board, settings, state, store) through `transport`
    (transport.Transport). `installed` is the running artifact {"size", "md5"}. Returns the
    outcome dict, with "trusted": the answer came over TLS verified with the anchors; for
    "updated" it holds the finished installer: the caller calls installer.activate() and resets.
    `deadline_ms` bounds connect and head; the body's deadline scales with its length.
    Writes state only on change: last_error on a failure, dropped once a call succeeds."""
    board = device.board
    deadline = httpclient.Deadline(deadline_ms, board.ticks_ms)
    tel = telemetry(device)
    headers = ias_headers(board, device.settings, installed or {}, mode, tel)
    resp = None
    try:
        resp = transport.get(
            _url(device, UPDATE_PATH),
            headers,
            max_redirects=0,  # IAS answers; a redirect is "no update" with its reason
            head_timeout_ms=HEAD_TIMEOUT_MS,
            buf=buf or bytearray(BUF_SIZE),
            deadline=deadline,
        )
        refused = trial.refused(device.state) if device.state is not None else ()
        out = check(resp, make_installer, feed, refused=refused)
        out["trusted"] = resp.verified
        out["anchored"] = getattr(resp, "anchored", None)  # "new": verified by a pending set
    except Exception as e:  # connect failures: ReasonError(reason) and friends
        out = {"outcome": "error", "reason": reason_of(e, "connect_failed"), "status": None}
        out["detail"] = str(e)
        out["trusted"] = False
    finally:
        if resp is not None:
            resp.close()
    if out.get("app") is None:
        installed = installed or {}
        out["app"] = {"name": installed.get("name", ""), "version": installed.get("version", "")}
    if device.state is not None:
        if out["outcome"] == "error":
            device.state.set("last_error", out["reason"])
        elif tel.get("last_error") is not None:
            # Reported in this request; the server has them.
            device.state.drop("last_error")
            trial.clear_error(device.state)
    return out


def announce(device, transport, msg, installed=None, deadline_ms=15000):
    """IAS's iasLog(msg): GET /ota/logs?msg=<msg> with the IAS headers (x-ESP-MODE: log); msg=1
    entering config mode, msg=0 leaving it. IAS ignores the answer and so do we, after waiting
    at most 5 s for its first byte. Returns the HTTP status or None; never raises."""
    board = device.board
    deadline = httpclient.Deadline(deadline_ms, board.ticks_ms)
    headers = ias_headers(board, device.settings, installed or {}, "log", telemetry(device))
    path = LOG_PATH + str(msg).replace(" ", "_")
    try:
        resp = transport.get(
            _url(device, path),
            headers,
            max_redirects=0,
            head_timeout_ms=HEAD_TIMEOUT_MS,
            buf=bytearray(BUF_SIZE),
            deadline=deadline,
        )
    except Exception:
        return None
    resp.close()
    return resp.status
