# Config mode: an access point named after the device, the config web app on it, and a way out
# (POST /close, or 300 s without a request: ias-protocol §4.4). The caller resets afterwards.
import asyncio

from . import log, settings, webapp, webguard

AP_IP = "192.168.4.1"
TIMEOUT_S = 300
_PW_CHARS = "abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY346789"  # nothing that reads alike
PW_LEN = 12
CLIENT_VERSION = "0.1.0"  # this client's release (pyproject.toml), shown on the config page


def device_name(board, s):
    return s["device_name"] or "ias-%d" % board.chip_id()


def new_password():
    raw = webguard.random_bytes(PW_LEN)
    return "".join(_PW_CHARS[b % len(_PW_CHARS)] for b in raw)


def ap_credentials(board, settings_path=settings.PATH):
    """(ssid, password) of the access point; password None when configured open. A device
    without a password gets a random one at first use, saved and printed on the console."""
    s = settings.load(settings_path)
    ssid = device_name(board, s)
    if s["ap_open"]:
        return ssid, None
    if not s["ap_password"]:
        s["ap_password"] = new_password()
        settings.save(s, settings_path)
        board.console("config access point %s, password %s" % (ssid, s["ap_password"]))
    return ssid, s["ap_password"]


def device_hosts(board, names, port):
    """hosts() for webguard: the Host values that name this device: its access point address,
    its name and name.local (`names`), and its address on the Wi-Fi it joined, with ':port'
    unless it is 80. A page on any other name (DNS rebinding) is a stranger."""
    sfx = "" if port == 80 else ":%d" % port
    fixed = []
    for n in names:
        if n and n.lower() + sfx not in fixed:
            fixed.append(n.lower() + sfx)
            if not sfx:
                fixed.append(n.lower() + ":80")

    def hosts():
        ip = board.wifi_ip()
        return fixed + [ip + sfx] if ip and ip + sfx not in fixed else fixed

    return hosts


def _announce(announce, msg):
    # IAS announces only when joined to a network (it goes to the server); a failure to
    # announce must not stop config mode.
    if announce is None:
        return
    try:
        announce(msg)
    except Exception as e:
        log.warn("config", "announce %s failed: %r" % (msg, e))


async def serve(cfg, host, port, timeout_s, dns=None):
    """Serve `cfg` (a webapp.ConfigApp) until /close or `timeout_s` idle, answering the
    captive portal's DNS queries (`dns`, a captive.Server) between. Returns the reason."""
    board = cfg.board
    server = asyncio.create_task(cfg.app.start_server(host=host, port=port))
    reason = "close"
    while not cfg.closed:
        await asyncio.sleep(0.1)
        board.feed_watchdog()
        if dns is not None:
            dns.poll()
        if board.ticks_diff(board.ticks_ms(), cfg.last_request) >= timeout_s * 1000:
            reason = "timeout"
            break
    await asyncio.sleep(0.3)  # let the /close reply (and any reply in flight) go out
    cfg.app.shutdown()
    try:
        await asyncio.wait_for(server, 5)
    except Exception:  # the server task ends by cancellation on some ports
        pass
    return reason


def anchor_diff(store, certs, now):
    """What installing anchors `certs` (der.Cert) changes, for the page to show first:
    {"add": [...], "remove": [...], "keep": [...]}, each {"name", "subject", "valid_until"}.
    "remove" leaves only after a call home verified through the new set (anchortx)."""
    from .der import name_text

    wanted = {}
    for c in certs:
        wanted[c.sha256] = c
    out = {"add": [], "remove": [], "keep": []}
    for row in store.report(now):
        kept = wanted.pop(row.get("sha256"), None) is not None
        out["keep" if kept else "remove"].append(
            {
                "name": row["name"],
                "subject": row.get("subject", ""),
                "until": row.get("valid_until", ""),
            }
        )
    for c in wanted.values():
        out["add"].append(
            {"name": "", "subject": name_text(c.subject), "until": anchors_iso(c.not_after)}
        )
    return out


def anchors_iso(t):
    from .reason import iso_date

    return iso_date(t)


def device_anchor_steps(device):
    """ "Get IAS root cert" in two steps, as (preview, apply): preview() fetches and verifies
    the signed anchor set through the device's transport (the ladder's locations), holds it
    and says what would change; apply(version) installs the held set if it is that version.
    Expiry checks need a sane clock: without one the device first joins a saved Wi-Fi
    network (beside its access point) and asks NTP."""
    from . import anchors

    held = {}

    def preview():
        held.clear()
        if anchors.sane_time(device.board, device.state) is None:
            device.settings["wifi"] = settings.load()["wifi"]  # the page may have added one
            device.start_network()
        res = anchors.preview(device, device.transport.fetch)
        out = res["outcome"]
        b = res["bundle"]
        if out == "found":
            held["bundle"] = b
            now = anchors.sane_time(device.board, device.state)
            diff = anchor_diff(device.store, b["certs"], now)
            msg = "anchor set v%d is signed by the update key" % b["version"]
            return dict(diff, ok=True, message=msg, version=b["version"])
        if out == "nothing_new":
            msg = "the device already has the newest anchor set"
        elif out == "skipped":
            msg = "the clock is not set: save a Wi-Fi network the device can join, then retry"
        else:
            msg = "no anchor set could be fetched: " + "; ".join(res["report"])
        return {"ok": False, "message": msg, "version": None}

    def apply(version):
        b = held.get("bundle")
        if b is None or b["version"] != version:
            return {"ok": False, "message": "preview the anchor set again", "version": None}
        now = anchors.sane_time(device.board, device.state)
        anchors.install(device, b, now)
        held.clear()
        msg = "installed anchor set v%d" % version
        return {"ok": True, "message": msg, "version": version}

    return preview, apply


def device_announce(device):
    """IAS's iasLog(msg) to the server through the device's transport."""
    from . import callhome

    installed = device.slots.installed_artifact()
    return lambda msg: callhome.announce(device, device.transport, msg, installed)


def installed_info(slots, state=None):
    """info() for the /i route: the running app's name (an) and version (av), read from the
    slot pointer, the one home of the installed version; this client's version (cv) and the
    IAS library it speaks for (il); the last call home (lc: {"outcome", "reason", "since"}) as
    the device recorded it, or none."""

    def info():
        from .callhome import IASLIB

        out = {"cv": CLIENT_VERSION, "il": IASLIB}
        if slots is not None:
            art = slots.installed_artifact()
            out["an"], out["av"] = art["name"], art["version"]
        if state is not None and state.get("last_call"):
            out["lc"] = state.get("last_call")
        return out

    return info


def start_dns(board, ip):
    """The captive portal's DNS server on the board's DNS port (53 on hardware; a virtual
    board has none unless board.json names a port), or None when it has none or cannot bind."""
    from . import captive

    port = getattr(board, "dns_port", captive.PORT)
    if not port:
        return None
    try:
        return captive.Server(ip, port)
    except (OSError, ValueError) as e:
        log.warn("config", "no captive DNS on port %s: %r" % (port, e))
        return None


def run(
    dev,
    store=None,
    settings_path=settings.PATH,
    fields=None,
    fetch_anchors=None,
    announce=None,
    port=None,
    timeout_s=TIMEOUT_S,
    host="0.0.0.0",
    www_dir="/www",
    info=None,
    start_ap=True,
    preview_anchors=None,
):
    """Config mode, blocking. `dev` is a device.Device (its board, store, app fields, anchor
    fetch and announce are used) or a bare board with the parts passed in. Raises the access
    point, serves the app on `port` (default board.config_port), announces "1"/"0" when
    joined to a network. Returns "close" or "timeout"; the caller resets afterwards, as IAS."""
    board = getattr(dev, "board", None)
    if board is None:
        board = dev
    else:
        store = store if store is not None else dev.store
        if fields is None and getattr(dev, "app", None) is not None:
            fields = dev.app.fields
        if fetch_anchors is None:
            preview_anchors, fetch_anchors = device_anchor_steps(dev)
        announce = announce or device_announce(dev)
        info = info or installed_info(dev.slots, getattr(dev, "state", None))
    fields = fields or ()
    if port is None:
        port = board.config_port
    dns = None
    page = "/"
    ip = host if host != "0.0.0.0" else AP_IP
    if start_ap:
        ssid, password = ap_credentials(board, settings_path)
        ip = board.ap_start(ssid, password) or AP_IP
        page = "http://%s%s/" % (ip, "" if port == 80 else ":%d" % port)
        board.console("config mode: join %s, open %s" % (ssid, page))
        dns = start_dns(board, ip)
    name = device_name(board, settings.load(settings_path))
    hosts = device_hosts(
        board, (ip, host if host != "0.0.0.0" else "", name, name + ".local"), port
    )
    board.led_pattern("config")
    joined = bool(board.wifi_ip())
    if joined:
        _announce(announce, "1")
    cfg = webapp.make_app(
        board,
        store,
        settings_path,
        fields,
        fetch_anchors,
        www_dir,
        info,
        hosts,
        preview_anchors=preview_anchors,
    )
    cfg.portal = page  # where phones' connectivity probes are redirected
    try:
        reason = asyncio.run(serve(cfg, host, port, timeout_s, dns))
    finally:
        if dns is not None:
            dns.close()
        if start_ap:
            board.ap_stop()
        board.led_pattern("off")
    log.info("config", "config mode ends (%s)" % reason)
    if joined and board.wifi_ip():
        _announce(announce, "0")
    return reason
