# The config web app (Microdot): the IAS routes with IAS's replies (ias-protocol §4.3), so IAS's
# own pages keep working, plus our one-page UI at / and a few JSON routes it uses. Settings are
# saved only after the whole request validated; the server's hardening (size limits, drained
# refusals, Host, origin and token checks, no caching) is webguard.py. No GET changes anything:
# IAS's delete (/csr?d=) and /close keep their shapes as POSTs with the page's token.
import asyncio
import json

from microdot import Response

from . import board as board_mod
from . import log, settings
from .reason import ReasonError, reason_of
from .webguard import BadRequest, escape, guarded_app, new_token, read_form, text

CERT_DIR = "/cert"
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
_CERT_EXTS = (".cer", ".pem", ".crt", ".der")
# Connectivity probes of Android, Apple, Windows, Firefox and others: each gets a 302 to the page.
PROBES = (
    "/generate_204",
    "/gen_204",
    "/hotspot-detect.html",
    "/library/test/success.html",
    "/ncsi.txt",
    "/connecttest.txt",
    "/redirect",
    "/fwlink",
    "/canonical.html",
    "/success.txt",
)
# The settings the page edits beside Wi-Fi and the app's fields (settings.py checks each).
EDITABLE = ("server", "channel", "interval", "device_name", "act_code")


def _data(obj):
    # IAS sends its JSON as text/json; every data reply goes out uncached (hdlReturn()).
    return Response(json.dumps(obj), headers={"Content-Type": "text/json"})


def _why(e):
    # "reason: detail", so the page can put the reason code in words
    r = reason_of(e, "error")
    d = str(e)
    return r if not d or d == r else (d if d.startswith(r + ":") else r + ": " + d)


def cert_name(filename):
    """The /cert/ file name for an uploaded file name: its base name with a .cer extension.
    Refuses anything but plain names (no folders, no leading dot)."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if filename != base:
        raise BadRequest("file name must not contain a folder")
    low = base.lower()
    for ext in _CERT_EXTS:
        if low.endswith(ext):
            base = base[: -len(ext)]
            break
    if not 1 <= len(base) <= 28 or base[0] == "." or ".." in base:
        raise BadRequest("file name must be 1 to 28 characters, not starting with a dot")
    for ch in base:
        if ch not in _NAME_CHARS:
            raise BadRequest("file name may hold only letters, digits, '.', '_' and '-'")
    return base + ".cer"


class ConfigApp:
    """The state of one config-mode session and the routes that use it.
    `fields`: the app's declared fields (app_api: name, label, default, max, type).
    `preview_anchors()`: the device fetches and verifies the signed anchor set and holds it;
    returns {"ok", "message", "version", "add", "remove", "keep"} (anchor_diff) without changing
    anything. `fetch_anchors(version)`: installs the set previewed as `version`; returns {"ok",
    "message", "version"}.
    `hosts()`: the Host values naming the device (webguard); `token`: the session's."""

    def __init__(
        self,
        board,
        store,
        settings_path=settings.PATH,
        fields=(),
        fetch_anchors=None,
        www_dir="/www",
        info=None,
        hosts=None,
        token=None,
        preview_anchors=None,
    ):
        self.board = board
        self.store = store
        self.settings_path = settings_path
        self.fields = list(fields)
        self.fetch_anchors = fetch_anchors
        self.preview_anchors = preview_anchors
        self.www_dir = www_dir
        self.info = info  # callable giving extra /i values, e.g. {"ss": app size}
        self.last_request = board.ticks_ms()
        self.closed = False
        self.portal = "/"  # the page's full URL in config mode (configmode sets it)
        self._trial = None  # the /wsa test-connect attempt: [ssid, password, state, ip]
        self.hosts = hosts
        self.token = token or new_token()
        self.app = self._build()

    # -- helpers ----------------------------------------------------------------------------
    def _touched(self):
        self.last_request = self.board.ticks_ms()

    def _settings(self):
        return settings.load(self.settings_path)

    def _save(self, data):
        try:
            settings.save(data, self.settings_path)
        except ReasonError as e:
            raise BadRequest(e.detail or e.reason)  # a settings refusal says what is wrong

    def _now(self):
        # Before NTP answered, the build time is the best lower bound of "now" (the RTC starts
        # at 2000, when no certificate is valid yet).
        t = self.board.time()
        if not self.board.clock_synced and t < board_mod.BUILD_TIME:
            t = board_mod.BUILD_TIME
        return t

    def _cert_list(self):
        root = getattr(self.store, "root", CERT_DIR)
        import os

        out = []
        for name in self.store.names():
            try:
                size = os.stat(root + "/" + name)[6]
            except OSError:
                continue
            out.append({"n": CERT_DIR + "/" + name, "s": size})
        return out

    def _field_value(self, f, values):
        v = values.get(f["name"], f.get("default", ""))
        return v if isinstance(v, str) else str(v)

    # -- routes -----------------------------------------------------------------------------
    def _build(self):
        app = guarded_app(self._touched, self.hosts, self.token)

        @app.get("/")
        def index(req):
            try:
                return Response.send_file(
                    self.www_dir + "/index.html", content_type="text/html; charset=UTF-8"
                )
            except OSError:
                return text("the config page is missing from %s" % self.www_dir, 404)

        @app.get("/token")
        def token(req):
            # Readable only by a page of this device: no CORS header, and webguard checks Host.
            return _data({"t": self.token})

        @app.get("/i")
        def info(req):
            s = self._settings()
            b = self.board
            ac = s["act_code"]
            out = {
                "cid": str(b.chip_id()),
                "fid": str(b.flash_id()),
                "fss": str(b.fs_free()),
                "ss": "0",
                "fs": str(b.flash_size()),
                "ab": "%s-micropython" % getattr(b, "chip", b.port),
                "ac": "1" if ac and ac != "000000" else "0",
                "mc": b.mac(),
                "xf": str(len(self.fields)),
            }
            if self.info is not None:
                for k, v in self.info().items():
                    out[k] = v if isinstance(v, dict) else str(v)  # lc stays a record
            # Ours, beyond IAS: what the page shows on its Info tab (the running app's name and
            # version, an and av, come from `info`: the slot pointer, see configmode).
            out["dn"] = s["device_name"]
            out["ip"] = b.wifi_ip() or ""
            out["fv"] = b.core_version()
            return _data(out)

        @app.get("/settings")
        def settings_get(req):
            s = self._settings()
            return _data({k: s[k] for k in EDITABLE})

        @app.post("/settings")
        async def settings_save(req):
            form = await read_form(req)
            s = self._settings()
            for k in EDITABLE:
                if k in form:
                    s[k] = form[k].strip()
            if "interval" in form:
                if not s["interval"].isdigit():
                    raise BadRequest("interval must be a whole number of seconds")
                s["interval"] = int(s["interval"])
            self._save(s)
            return text("1")

        @app.get("/wsc")
        def scan_rows(req):
            rows = []
            for ssid, rssi, secured in self._scan():
                rows.append(
                    '<tr><td onclick="c(this);">%s</td><td>%d dBm</td>'
                    '<td data-e="%s"></td></tr>' % (escape(ssid), rssi, "3" if secured else "0")
                )
            return Response("".join(rows), headers={"Content-Type": "text/json"})

        @app.get("/scan")
        def scan_json(req):
            return _data([{"s": s, "r": r, "e": 1 if sec else 0} for s, r, sec in self._scan()])

        @app.get("/wc")
        def wifi_slots(req):
            nets = self._settings()["wifi"]
            return _data(
                [
                    # ours beside IAS's "s": "k", whether a password is saved (never the password)
                    {"s": nets[i]["ssid"], "k": bool(nets[i]["password"])}
                    if i < len(nets)
                    else {"s": "", "k": False}
                    for i in range(settings.MAX_NETWORKS)
                ]
            )

        @app.post("/wsa")
        async def wifi_save(req):
            form = await read_form(req)
            ssid = form.get("s", "")
            password = form.get("p", "")
            slot = form.get("i", "")
            if slot:
                if slot not in ("1", "2", "3"):
                    raise BadRequest("i must be 1, 2 or 3")
                self._store_slot(int(slot) - 1, ssid, password, form.get("o") == "1")
                return text("1")
            return text(self._test_connect(ssid, password))

        @app.get("/app")
        def app_fields(req):
            values = self._settings()["fields"]
            return _data(
                [
                    {
                        "l": f.get("label", f["name"]),
                        "v": self._field_value(f, values),
                        "n": str(i),
                        "m": str(f.get("max", 32)),
                        "t": f.get("type", "L"),
                    }
                    for i, f in enumerate(self.fields)
                ]
            )

        @app.post("/as")
        async def app_save(req):
            form = await read_form(req)
            if not self.fields:
                return text("0")
            s = self._settings()
            values = dict(s["fields"])
            for i, f in enumerate(self.fields):
                if str(i) in form:
                    values[f["name"]] = check_field(f, form[str(i)])
            s["fields"] = values
            self._save(s)
            return text("1")

        @app.post("/ds")
        async def activation(req):
            code = (await read_form(req)).get("ac", "")[:6]
            if not code:
                return text("0")
            s = self._settings()
            s["act_code"] = code
            self._save(s)
            return text("1")

        @app.route("/csr", methods=["GET", "POST"])
        def cert_files(req):
            path = req.args.get("d")
            if path is not None:
                if req.method != "POST":
                    raise BadRequest("deleting takes a POST with the page's token", 405)
                self._delete_cert(path)
            return _data(self._cert_list())

        @app.get("/certs")
        def cert_report(req):
            b = self.board
            return _data(
                {
                    "clock": bool(b.clock_synced),
                    "now": self._now(),
                    "certs": self.store.report(self._now()),
                }
            )

        @app.post("/certupl")
        async def cert_upload(req):
            _form, files = await read_form(req, files=True)
            if len(files) != 1:
                raise BadRequest("upload exactly one certificate file")
            _field, filename, data = files[0]
            name = cert_name(filename)
            self._add_cert(name, data)
            return text("")

        @app.post("/anchors/preview")
        def anchors_preview(req):
            if self.preview_anchors is None:
                return _data({"ok": False, "message": "this build cannot fetch anchors"})
            try:
                res = self.preview_anchors()
            except Exception as e:  # the page must get an answer, whatever broke
                res = {"ok": False, "message": "no anchor set could be fetched: " + _why(e)}
            return _data(res)

        @app.post("/anchors/fetch")
        async def anchors_fetch(req):
            # Applies the set the page previewed (and showed) as version `v`, nothing else.
            v = (await read_form(req)).get("v", "")
            if self.fetch_anchors is None:
                return _data(
                    {"ok": False, "message": "this build cannot fetch anchors", "version": None}
                )
            if not v.isdigit():
                raise BadRequest("preview the anchor set first, then confirm its version")
            try:
                res = self.fetch_anchors(int(v))
            except Exception as e:  # the page must get an answer, whatever broke
                res = {"ok": False, "message": "not installed: " + _why(e), "version": None}
            return _data(
                {
                    "ok": bool(res.get("ok")),
                    "message": str(res.get("message", "")),
                    "version": res.get("version"),
                }
            )

        @app.post("/close")
        def close(req):
            self.closed = True  # configmode stops the server once this reply is out
            return text("closing")

        @app.get("/log")
        def log_tail(req):
            try:
                n = min(max(int(req.args.get("n", "20")), 1), 50)
            except ValueError:
                raise BadRequest("n must be a number")
            return _data({"lines": log.tail(n)})

        def probe(req):
            # A phone's connectivity probe: the captive DNS sent it here; the redirect makes
            # the phone show the config page by itself.
            return Response("", 302, {"Location": self.portal})

        for path in PROBES:
            app.get(path)(probe)

        return app

    # -- Wi-Fi ------------------------------------------------------------------------------
    def _scan(self):
        nets = {}
        for ssid, rssi, secured in self.board.wifi_scan():
            if ssid and (ssid not in nets or nets[ssid][0] < rssi):
                nets[ssid] = (rssi, secured)
        rows = [(ssid, v[0], v[1]) for ssid, v in nets.items()]
        rows.sort(key=lambda r: -r[1])
        return rows

    def _store_slot(self, idx, ssid, password, open_net=False):
        s = self._settings()
        nets = list(s["wifi"])
        if ssid and not password and not open_net and idx < len(nets):
            if nets[idx]["ssid"] == ssid:
                password = nets[idx]["password"]  # re-saved without typing it: kept
        if not ssid:
            if idx < len(nets):
                nets.pop(idx)
        elif idx < len(nets):
            nets[idx] = {"ssid": ssid, "password": password}
        else:
            nets.append({"ssid": ssid, "password": password})
        s["wifi"] = nets
        self._save(s)

    def _test_connect(self, ssid, password):
        """IAS's AP-form protocol: '2' while trying (the page polls), '3' failed, '1:<ip>'
        joined (the network is stored first in the list)."""
        if not ssid:
            raise BadRequest("no network name")
        # Validate before trying, so a join never leads to a save that fails.
        probe = self._settings()
        probe["wifi"] = [{"ssid": ssid, "password": password}]
        try:
            settings.validate(probe)
        except ReasonError as e:
            raise BadRequest(e.detail or e.reason)  # a settings refusal says what is wrong
        t = self._trial
        if t is None or t[0] != ssid or t[1] != password or t[2] == "3 told":
            # As IAS: a poll after a reported failure starts a new attempt.
            self._trial = [ssid, password, "2", None]
            asyncio.create_task(self._join(self._trial))
            return "2"
        if t[2] == "3":
            t[2] = "3 told"
            return "3"
        return t[2] if t[2] != "1" else "1:" + t[3]

    async def _join(self, trial):
        await asyncio.sleep(0.1)  # let the "2" reply go out first: the join blocks
        ip = self.board.wifi_connect([{"ssid": trial[0], "password": trial[1]}], 10000)
        if not ip:
            trial[2] = "3"
            return
        s = self._settings()
        nets = [{"ssid": trial[0], "password": trial[1]}]
        for n in s["wifi"]:
            if n["ssid"] != trial[0] and len(nets) < settings.MAX_NETWORKS:
                nets.append(n)
        s["wifi"] = nets
        settings.save(s, self.settings_path)
        trial[3] = ip
        trial[2] = "1"

    # -- certificates -----------------------------------------------------------------------
    def _delete_cert(self, path):
        prefix = CERT_DIR + "/"
        name = path[len(prefix) :] if path.startswith(prefix) else ""
        if not name or "/" in name or "\\" in name or ".." in name:
            raise BadRequest("refused: only files in %s can be deleted" % CERT_DIR)
        names = self.store.names()
        if name not in names:
            raise BadRequest("no such certificate: %s" % name, 404)
        report = self.store.report(self._now())
        usable = [r["name"] for r in report if r.get("usable")]
        if len(names) <= 1 or (name in usable and len(usable) <= 1):
            raise BadRequest("refused: %s is the last trust anchor; add another first" % name, 409)
        try:
            self.store.remove(name, self._now())
        except ValueError as e:  # a ReasonError
            raise BadRequest("refused: %s" % e, 409)

    def _add_cert(self, name, data):
        try:
            # An upload under an existing name renews it, as IAS's "get root cert" does.
            self.store.add(name, data, self._now(), replace=True)
        except ValueError as e:  # ReasonError: not a usable CA certificate
            raise BadRequest("not stored: %s" % e)


def check_field(field, value):
    """A field value cut to the field's max length (as IAS does) and checked for its type."""
    value = value[: int(field.get("max", 32))]
    kind = field.get("type", "L")
    if kind == "C" and value not in ("0", "1"):
        raise BadRequest("%s: a checkbox is 0 or 1" % field["name"])
    if kind in ("I", "S") and value and not value.isdigit():
        raise BadRequest("%s: must be a whole number" % field["name"])
    if kind == "N" and value:
        try:
            float(value)
        except ValueError:
            raise BadRequest("%s: must be a number" % field["name"])
    return value


make_app = ConfigApp  # the config app; its Microdot app is `.app`
