# Config mode: an access point named after the device, the config web app on it, and a way out
# (GET /close, or 300 s without a request: ias-protocol §4.4). The caller resets afterwards.
import asyncio

from . import log, settings, webapp

AP_IP = "192.168.4.1"
TIMEOUT_S = 300
_PW_CHARS = "abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY346789"  # nothing that reads alike
PW_LEN = 12


def device_name(board, s):
    return s["device_name"] or "ias-%d" % board.chip_id()


def _random_bytes(n):
    try:
        import os

        return os.urandom(n)
    except (ImportError, AttributeError):
        import random

        return bytes(random.getrandbits(8) for _ in range(n))


def new_password():
    raw = _random_bytes(PW_LEN)
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


def device_fetch_anchors(device):
    """ "Get IAS root cert": the device fetches and installs the signed anchor set itself (the
    recovery ladder, forced) through its transport, as {"ok", "message", "version"} for the
    page. Expiry checks need a sane clock: without one the device first joins a saved Wi-Fi
    network (beside its access point) and asks NTP."""
    from . import anchors

    def fetch():
        if anchors.sane_time(device.board, device.state) is None:
            device.settings["wifi"] = settings.load()["wifi"]  # the page may have added one
            device.start_network()
        res = anchors.recover(device, device.transport.fetch, force=True, why="config")
        out = res.get("outcome")
        v = res.get("version")
        if out == "installed":
            msg = "installed anchor bundle v%s" % v
        elif out == "nothing_new":
            msg = "the device already has the newest anchor bundle"
        elif out == "skipped":
            msg = "the clock is not set: save a Wi-Fi network the device can join, then retry"
        else:
            msg = "no anchor bundle could be fetched: " + "; ".join(res.get("report") or [])
        return {"ok": out in ("installed", "nothing_new"), "message": msg, "version": v}

    return fetch


def device_announce(device):
    """IAS's iasLog(msg) to the server through the device's transport."""
    from . import callhome

    installed = device.slots.installed_artifact()
    return lambda msg: callhome.announce(device, device.transport, msg, installed)


def installed_info(slots):
    """info() for the /i route: the running app's name (an) and version (av), read from the
    slot pointer, the one home of the installed version."""

    def info():
        art = slots.installed_artifact()
        return {"an": art["name"], "av": art["version"]}

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
        fetch_anchors = fetch_anchors or device_fetch_anchors(dev)
        announce = announce or device_announce(dev)
        info = info or installed_info(dev.slots)
    fields = fields or ()
    if port is None:
        port = board.config_port
    dns = None
    page = "/"
    if start_ap:
        ssid, password = ap_credentials(board, settings_path)
        ip = board.ap_start(ssid, password) or AP_IP
        page = "http://%s%s/" % (ip, "" if port == 80 else ":%d" % port)
        board.console("config mode: join %s, open %s" % (ssid, page))
        dns = start_dns(board, ip)
    board.led_pattern("config")
    joined = bool(board.wifi_ip())
    if joined:
        _announce(announce, "1")
    cfg = webapp.make_app(board, store, settings_path, fields, fetch_anchors, www_dir, info)
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
