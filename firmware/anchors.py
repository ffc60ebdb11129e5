# Trust continuity policy (design §1, §6; issue 6): the recovery ladder when TLS verification
# fails, proactive refresh before the earliest anchor expires, and what the call home reports.
# The signature by the operator's offline update key, never the channel, authorises a bundle,
# so a bundle may come over plain HTTP. anchorset.py verifies a bundle, anchortx.py installs it
# (pending until a verified call home confirms it), keyrotation.py brings new update keys.
from . import anchorset, anchortx, keyrotation, log, timefloor, trust
from . import board as board_mod
from .reason import ReasonError, const, reason_of

BUNDLE = "anchors.json"
RATE_S = const(6 * 3600)  # scheduled ladder walks at most this often; a forced walk always runs
THRESHOLDS = (180, 60, 30)  # days before the earliest anchor expiry: fetch the newest bundle
MAX_REPORT = const(8)  # rung lines kept for the next call home


def sane_time(board, state):
    """The board's Unix time if NTP set it and it is past the build and the persisted floor;
    None otherwise. Expiry checks never run on an unset clock (it starts at 2000-01-01)."""
    return board_mod.trusted_time(board, timefloor.floor(state))


# -- where bundles come from -------------------------------------------------------------------
def recovery_locations(settings):
    """Base URLs (ending in '/') to fetch anchors.json from, in ladder order: the configured
    recovery URLs, else the update server's /ota/anchors/ over HTTPS, then plain HTTP."""
    rec = settings.get("recovery") or []
    if rec:
        return [u if u.endswith("/") else u + "/" for u in rec]
    from . import net, transport

    scheme, host, port, _ = net.parse_url(settings["server"])
    if scheme == "http":
        return ["http://%s/ota/anchors/" % transport.host_header("http", host, port)]
    return [
        "https://%s/ota/anchors/" % transport.host_header("https", host, port),
        "http://%s/ota/anchors/" % transport.host_header("http", host, 80),
    ]


# -- the recovery ladder --------------------------------------------------------------------------
def _server_host(settings):
    try:
        from . import net

        return net.parse_url(settings["server"])[1]
    except (ValueError, KeyError):
        return None


def _rung(device, fetch, base, now, keys_dir, host, force):
    """One location: fetch, verify, install. Returns the outcome word for the report."""
    return install(device, _verified(device, fetch, base, now, keys_dir, host), now)


def install(device, bundle, now):
    """Install a verified bundle (pending until a call home through its anchors confirms it);
    its signed issue time is authenticated time for the floor. Returns its version."""
    if bundle["issued"] is not None:
        timefloor.confirm(device.state, device.board, bundle["issued"])
    anchortx.install_bundle(bundle, device.store, device.state, now)
    return bundle["version"]


def _verified(device, fetch, base, now, keys_dir, host):
    """The bundle at `base`, fetched and verified (a rotated update key is looked for once
    when the signature does not verify); ReasonError otherwise."""
    state = device.state
    raw = fetch(base + BUNDLE, anchorset.MAX_BUNDLE)
    sig = fetch(base + BUNDLE + ".sig", anchorset.MAX_SIG)
    for attempt in (0, 1):
        try:
            keys = trust.load_keys(keys_dir)
            version = anchorset.installed_version(state)
            bundle = anchorset.verify_bundle(raw, sig, keys, version, now, host)
            break
        except ReasonError as e:
            if (
                e.reason != "bad_signature"
                or attempt
                or not keyrotation.fetch_keys(fetch, base, state, now, keys_dir)
            ):
                raise
    return bundle


def recover(device, fetch, force=False, why="untrusted", keys_dir="/keys"):
    """The recovery ladder, after TLS verification failed with every anchor (`why`: untrusted
    or expired) or for a refresh. Walks recovery_locations() in order; the first valid newer
    bundle is installed (pending) and the walk stops, so the caller can retry the call home in
    the same cycle. A forced walk ignores the rate limit and tries every rung, installing any
    higher version it meets. Scheduled walks run at most every RATE_S. Returns
    {"outcome": installed | nothing_new | failed | rate_limited | skipped, "version", "report"}."""
    state = device.state
    now = sane_time(device.board, state)
    if now is None:
        log.warn("anchors", "ladder skipped: the clock is not set")
        return {"outcome": "skipped", "reason": "clock_unset", "version": None, "report": []}
    last = state.get("anchors_ladder_at")
    if not force and last is not None and 0 <= now - last < RATE_S:
        return {"outcome": "rate_limited", "next": last + RATE_S, "version": None, "report": []}
    host = _server_host(device.settings)
    report = []
    version = None
    answered = False
    for i, base in enumerate(recovery_locations(device.settings)):
        try:
            v = _rung(device, fetch, base, now, keys_dir, host, force)
        except ReasonError as e:
            word = e.reason
            answered = answered or e.reason == "not_newer"
        except Exception as e:  # OSError and the like: this rung is unreachable
            word = reason_of(e, type(e).__name__)
        else:
            version = v
            word = "installed v%d" % v
        line = "%d %s %s" % (i + 1, base, word)
        log.info("anchors", "ladder (%s): %s" % (why, line))
        report.append(line)
        if version is not None and not force:
            break
    outcome = "installed" if version is not None else ("nothing_new" if answered else "failed")
    keep = (state.get("anchors_report") or [])[-MAX_REPORT:]
    keep = (keep + ["%s@%d %s" % (why, now, outcome)] + report)[-MAX_REPORT:]
    state.update({"anchors_ladder_at": now, "anchors_report": keep})
    return {"outcome": outcome, "version": version, "report": report}


def preview(device, fetch, keys_dir="/keys"):
    """Config mode's first step of "Get IAS root cert": the newest verified bundle the ladder's
    locations offer, installing nothing. Returns {"outcome": found | nothing_new | failed |
    skipped, "bundle", "report"}; install(device, bundle, now) is the second step."""
    now = sane_time(device.board, device.state)
    if now is None:
        return {"outcome": "skipped", "bundle": None, "report": []}
    host = _server_host(device.settings)
    best, report, answered = None, [], False
    for i, base in enumerate(recovery_locations(device.settings)):
        try:
            b = _verified(device, fetch, base, now, keys_dir, host)
        except ReasonError as e:
            word = e.reason
            answered = answered or e.reason == "not_newer"
        except Exception as e:  # OSError and the like: this location is unreachable
            word = reason_of(e, type(e).__name__)
        else:
            word = "v%d" % b["version"]
            if best is None or b["version"] > best["version"]:
                best = b
        report.append("%d %s %s" % (i + 1, base, word))
    outcome = "found" if best else ("nothing_new" if answered else "failed")
    return {"outcome": outcome, "bundle": best, "report": report}


def report_header(state, most=200):
    """The ladder report for the next successful call home (one header value), or None."""
    lines = state.get("anchors_report")
    if not lines:
        return None
    text = "; ".join(lines)
    return text if len(text) <= most else text[-most:]


def report_sent(state):
    """Call after a successful call home carried report_header(): the server has it now."""
    state.drop("anchors_report")


# -- proactive refresh ----------------------------------------------------------------------------
def refresh_due(state, store, now):
    """The threshold (180, 60 or 30 days) whose refresh is due and not done yet for the current
    earliest expiry, or None. Several crossed at once (a long-offline device) fire once."""
    if now is None:
        return None
    t = store.earliest_expiry(now)
    if t is None:
        return None
    days = (t - now) // 86400
    done = _refreshed(state, t)
    due = [th for th in THRESHOLDS if days <= th and th not in done]
    return min(due) if due else None


def _refreshed(state, expiry):
    # The thresholds already done for this earliest expiry (a new anchor set starts afresh).
    rec = state.get("anchors_refresh") or {}
    return rec.get("done", []) if rec.get("expiry") == expiry else []


def mark_refreshed(state, store, now, threshold):
    """Record `threshold` and every larger one as done for the current earliest expiry."""
    t = store.earliest_expiry(now)
    done = sorted(set(_refreshed(state, t) + [th for th in THRESHOLDS if th >= threshold]))
    state.set("anchors_refresh", {"expiry": t, "done": done})


def refresh(device, fetch, keys_dir="/keys"):
    """If a refresh threshold is due: mark it (once per threshold, even if the walk fails)
    and walk the ladder for a newer bundle. Returns recover()'s result or None."""
    now = sane_time(device.board, device.state)
    th = refresh_due(device.state, device.store, now)
    if th is None:
        return None
    mark_refreshed(device.state, device.store, now, th)
    log.info("anchors", "earliest anchor expires within %d days: refreshing" % th)
    return recover(device, fetch, force=True, why="refresh%d" % th, keys_dir=keys_dir)
