# The config web app over real HTTP on loopback, inside the unix port: every IAS route and reply,
# our page's routes, hostile input (oversized, traversal, bad UTF-8, bad multipart, markup), the
# /close and inactivity exits of config mode. The board is the real virtual board (board_unix)
# on a temporary host folder; the certificate store is a small fake that keeps the CertStore
# contract (the real one is tested with real certificates by tests/test_config_browser.py).
import json
import os
import sys

try:
    import microdot  # noqa: F401  (put there by tools.mplib.lib_path() via the runner)
except ImportError:
    # The venv's microdot package: appended last, so nothing there shadows a MicroPython module.
    _bin = sys.executable.rsplit("/", 1)[0]
    _lib = _bin.rsplit("/", 1)[0] + "/lib"
    for _d in os.listdir(_lib):
        if _d.startswith("python3"):
            sys.path.append(_lib + "/" + _d + "/site-packages")
    for _p in ("../../build/mplib",):
        sys.path.append(_p)
    import microdot  # noqa: F401

import asyncio

from ias import configmode, settings, webapp, webguard
from ias.board_unix import VirtualBoard

BASE = "/tmp/ias_webapp_test"
HOST = BASE + "/host"
CERT = BASE + "/cert"
SETTINGS = BASE + "/settings.json"
WWW = "../../firmware/www"
EVIL = '<img src=x onerror="alert(1)">&\'"'

FIELDS = [
    {"name": "colour", "label": "Colour", "default": "red", "max": 8, "type": "L"},
    {"name": "count", "label": "Count", "default": "3", "max": 4, "type": "N"},
    {"name": "on", "label": "Enabled", "default": "1", "max": 1, "type": "C"},
]


def _rmtree(path):
    try:
        st = os.stat(path)
    except OSError:
        return
    if st[0] & 0x4000:
        for n in os.listdir(path):
            _rmtree(path + "/" + n)
        os.rmdir(path)
    else:
        os.remove(path)


def fake_cert(subject, ca=True, days=1000, pad=0):
    meta = {"subject": subject, "ca": ca, "days": days}
    return ("FAKECERT %s\n%s" % (json.dumps(meta), "A" * pad)).encode()


class FakeStore:
    """The CertStore contract (names, report, add, remove; ReasonError is a ValueError)."""

    def __init__(self, root):
        self.root = root
        self.removed = []

    def names(self):
        return sorted(n for n in os.listdir(self.root) if n.endswith(".cer"))

    def _meta(self, data):
        if not data.startswith(b"FAKECERT "):
            raise ValueError("not a certificate (no PEM or DER certificate found)")
        return json.loads(data[9:].split(b"\n", 1)[0])

    def report(self, now):
        out = []
        for n in self.names():
            with open(self.root + "/" + n, "rb") as f:
                m = self._meta(f.read())
            out.append(
                {
                    "name": n,
                    "subject": m["subject"],
                    "issuer": m["subject"],
                    "not_before": 0,
                    "not_after": now + m["days"] * 86400,
                    "valid_until": "2030-01-01",
                    "days_left": m["days"],
                    "sha256": "ab" * 32,
                    "is_ca": m["ca"],
                    "usable": m["days"] > 0,
                }
            )
        return out

    def add(self, name, data, now, replace=False):
        m = self._meta(data)
        if not m["ca"]:
            raise ValueError("not a CA certificate")
        if m["days"] <= 0:
            raise ValueError("expired")
        with open(self.root + "/" + name + ".tmp", "wb") as f:
            f.write(data)
        os.rename(self.root + "/" + name + ".tmp", self.root + "/" + name)

    def remove(self, name, now):
        self.removed.append(name)
        os.remove(self.root + "/" + name)


def setup(networks=None, certs=None):
    _rmtree(BASE)
    for d in (BASE, HOST, CERT):
        os.mkdir(d)
    hw = {
        "chip": "esp32",
        "mac": "24:0A:C4:12:34:56",
        "config_port": 0,
        "networks": networks
        if networks is not None
        else [
            {"ssid": "lab", "password": "labpass1", "rssi": -50},
            {"ssid": EVIL, "password": "", "rssi": -70},
            {"ssid": "weak", "password": "x" * 8, "rssi": -90},
        ],
    }
    with open(HOST + "/board.json", "w") as f:
        json.dump(hw, f)
    for name, data in certs or [
        ("iasRootCa.cer", fake_cert("Root A")),
        ("other.cer", fake_cert("Root B")),
    ]:
        with open(CERT + "/" + name, "wb") as f:
            f.write(data)
    board = VirtualBoard(HOST)
    store = FakeStore(CERT)
    return board, store


def _port():
    return 20000 + int.from_bytes(os.urandom(2), "little") % 30000


SESSION = {"token": ""}  # the token of the config app under test (its page reads GET /token)


async def _send(port, raw):
    # request() leaves @HOST@ and @TOKEN@ in the head: the served address and session token
    head, sep, rest = raw.partition(b"\r\n\r\n")
    head = head.replace(b"@HOST@", b"127.0.0.1:%d" % port)
    raw = head.replace(b"@TOKEN@", SESSION["token"].encode()) + sep + rest
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = b""
    while True:
        chunk = await reader.read(1024)
        if not chunk:
            break
        data += chunk
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1]) if lines[0] else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def request(method, path, body=b"", ctype=None, headers=None):
    """A raw request as the config page sends it: to the served address, and for a change
    from the page's origin with the session's token; `headers` adds or (None) drops some."""
    if isinstance(body, str):
        body = body.encode()
    hdrs = {"Host": "@HOST@"}
    if method != "GET":
        hdrs["Origin"] = "http://@HOST@"
        hdrs["X-IAS-Token"] = "@TOKEN@"
    hdrs.update(headers or {})
    h = "%s %s HTTP/1.1\r\n" % (method, path)
    for k, v in hdrs.items():
        if v is not None:
            h += "%s: %s\r\n" % (k, v)
    if ctype:
        h += "Content-Type: %s\r\n" % ctype
    if body:
        h += "Content-Length: %d\r\n" % len(body)
    return h.encode() + b"\r\n" + body


def form(**kw):
    parts = []
    for k, v in kw.items():
        parts.append("%s=%s" % (k, v.replace("%", "%25").replace("&", "%26").replace(" ", "+")))
    return "&".join(parts), "application/x-www-form-urlencoded"


BOUNDARY = "----iasTestBoundary7MA4YWxk"


def multipart(fields=(), files=()):
    out = b""
    for k, v in fields:
        out += (
            ('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n' % (BOUNDARY, k)).encode()
            + (v if isinstance(v, bytes) else v.encode())
            + b"\r\n"
        )
    for k, fname, data in files:
        out += (
            (
                '--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n" % (BOUNDARY, k, fname)
            ).encode()
            + data
            + b"\r\n"
        )
    out += ("--%s--\r\n" % BOUNDARY).encode()
    return out, "multipart/form-data; boundary=" + BOUNDARY


def run_app(board, store, script, fetch_anchors=None, fields=FIELDS, preview_anchors=None):
    """Serve the app on a random loopback port and run `script(port)` (a coroutine) against it.
    Returns (script's result, ConfigApp)."""
    port = _port()
    hosts = lambda: ["127.0.0.1:%d" % port]  # noqa: E731
    cfg = webapp.make_app(
        board,
        store,
        SETTINGS,
        fields,
        fetch_anchors,
        WWW,
        hosts=hosts,
        preview_anchors=preview_anchors,
    )
    SESSION["token"] = cfg.token
    out = {}

    async def main():
        server = asyncio.create_task(cfg.app.start_server(host="127.0.0.1", port=port))
        for _ in range(200):  # listening before the script connects, however loaded the host
            await asyncio.sleep(0.01)
            if cfg.app.server is not None:
                break
        try:
            out["r"] = await script(port)
        finally:
            cfg.app.shutdown()
            await asyncio.sleep(0.05)
            server.cancel()

    asyncio.run(main())
    return out["r"], cfg


def run_config_with(client, *args, **kw):
    """configmode.run(*args, **kw) with `client()` (a coroutine) started as a task in config
    mode's event loop once it serves: returns (run's reason, what client returned)."""
    orig_serve = configmode.serve
    out = {}

    async def serve_with_client(cfg, host, p, t, dns=None):
        SESSION["token"] = cfg.token
        task = asyncio.create_task(client())
        reason = await orig_serve(cfg, host, p, t, dns)
        out["client"] = await task
        return reason

    configmode.serve = serve_with_client
    try:
        reason = configmode.run(*args, **kw)
    finally:
        configmode.serve = orig_serve
    return reason, out.get("client")


def call(board, store, *reqs, **kw):
    """Send each raw request in turn; returns the list of (status, headers, body)."""

    async def script(port):
        res = []
        for raw in reqs:
            res.append(await _send(port, raw))
        return res

    return run_app(board, store, script, **kw)[0]


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _saved():
    with open(SETTINGS) as f:
        return json.load(f)


# -- IAS routes ---------------------------------------------------------------------------------
def test_info_all_strings_and_no_cache():
    board, store = setup()
    ((st, h, body),) = call(board, store, request("GET", "/i"))
    assert st == 200
    assert h["cache-control"] == "no-cache, no-store, must-revalidate"
    assert h["pragma"] == "no-cache" and h["expires"] == "-1"
    info = json.loads(body)
    for k in ("cid", "fid", "fss", "ss", "fs", "ab", "ac", "mc", "xf"):
        assert isinstance(info[k], str), k
    assert info["mc"] == "24:0A:C4:12:34:56"
    assert info["cid"] == str(0x12C40A24)  # first four MAC bytes, little-endian
    assert info["xf"] == "3" and info["ac"] == "0"


def test_activation_code():
    board, store = setup()
    b, ct = form(ac="ABC123XYZ")
    r = call(
        board,
        store,
        request("POST", "/ds", b, ct),
        request("GET", "/i"),
        request("POST", "/ds", *form(ac="")),
    )
    assert r[0][2] == b"1"
    assert _saved()["act_code"] == "ABC123"  # first six characters, as IAS
    assert json.loads(r[1][2])["ac"] == "1"
    assert r[2][2] == b"0"


def test_scan_rows_sorted_and_escaped():
    board, store = setup()
    ((st, h, body),) = call(board, store, request("GET", "/wsc"))
    assert st == 200
    text = body.decode()
    assert text.index(">lab<") < text.index("&lt;img") < text.index(">weak<")  # by RSSI
    assert "<img" not in text and "onerror=&quot;" in text and "&amp;&#39;&quot;" in text
    assert text.startswith('<tr><td onclick="c(this);">lab</td><td>-50 dBm</td>')
    assert text.count("<tr>") == 3


def test_scan_json_for_our_page():
    board, store = setup()
    ((st, h, body),) = call(board, store, request("GET", "/scan"))
    rows = json.loads(body)
    assert [r["s"] for r in rows] == ["lab", EVIL, "weak"]
    assert rows[0]["e"] == 1 and rows[1]["e"] == 0


def test_wifi_slots_store_and_list():
    board, store = setup()
    r = call(
        board,
        store,
        request("POST", "/wsa", *form(s="home", p="homepass1", i="1")),
        request("POST", "/wsa", *form(s="work", p="", i="2")),
        request("POST", "/wsa", *form(s="cafe net", p="cafepass1", i="2")),
        request("GET", "/wc"),
    )
    assert [x[2] for x in r[:3]] == [b"1", b"1", b"1"]
    assert [x["s"] for x in json.loads(r[3][2])] == ["home", "cafe net", ""]  # IAS's shape
    assert _saved()["wifi"] == [
        {"ssid": "home", "password": "homepass1"},
        {"ssid": "cafe net", "password": "cafepass1"},
    ]


def test_wifi_invalid_saves_nothing():
    board, store = setup()
    r = call(
        board,
        store,
        request("POST", "/wsa", *form(s="home", p="homepass1", i="1")),
        request("POST", "/wsa", *form(s="x", p="short", i="2")),
        request("POST", "/wsa", *form(s="x", p="longenough", i="7")),
        request("POST", "/wsa", *form(s="y" * 33, p="", i="1")),
    )
    assert r[0][2] == b"1"
    assert r[1][0] == 400 and b"8 to 63" in r[1][2]
    assert r[2][0] == 400
    assert r[3][0] == 400
    assert _saved()["wifi"] == [{"ssid": "home", "password": "homepass1"}]


def test_wifi_test_connect_protocol():
    board, store = setup()

    async def script(port):
        good = request("POST", "/wsa", *form(s="lab", p="labpass1"))
        first = await _send(port, good)
        await asyncio.sleep(0.3)  # the join runs after the "2" went out
        second = await _send(port, good)
        bad = request("POST", "/wsa", *form(s="lab", p="wrongpass"))
        b1 = await _send(port, bad)
        await asyncio.sleep(0.3)
        b2 = await _send(port, bad)
        b3 = await _send(port, bad)  # after a reported failure, a poll tries again
        return first, second, b1, b2, b3

    (first, second, b1, b2, b3), _ = run_app(board, store, script)
    assert first[2] == b"2"
    assert second[2] == b"1:127.0.0.1"
    assert _saved()["wifi"][0] == {"ssid": "lab", "password": "labpass1"}
    assert b1[2] == b"2" and b2[2] == b"3" and b3[2] == b"2"
    assert len(_saved()["wifi"]) == 1  # the failed network was not stored


def test_app_fields_round_trip():
    board, store = setup()
    body, ct = multipart([("0", "blue-green-yellow"), ("1", "42"), ("2", "0")])
    r = call(
        board,
        store,
        request("GET", "/app"),
        request("POST", "/as", body, ct),
        request("GET", "/app"),
    )
    before = json.loads(r[0][2])
    assert before[0] == {"l": "Colour", "v": "red", "n": "0", "m": "8", "t": "L"}
    assert r[1][2] == b"1"
    after = json.loads(r[2][2])
    assert [f["v"] for f in after] == ["blue-gre", "42", "0"]  # cut to max length
    assert _saved()["fields"] == {"colour": "blue-gre", "count": "42", "on": "0"}


def test_app_fields_markup_kept_verbatim_in_json():
    board, store = setup()
    r = call(board, store, request("POST", "/as", *form(**{"0": "<b>&"})), request("GET", "/app"))
    assert r[0][2] == b"1"
    assert json.loads(r[1][2])[0]["v"] == "<b>&"  # JSON-escaped; the page uses textContent


def test_app_fields_invalid_saves_nothing():
    board, store = setup()
    body, ct = multipart([("0", "green"), ("1", "many")])
    r = call(
        board,
        store,
        request("POST", "/as", body, ct),
        request("POST", "/as", *form(**{"0": "green", "2": "yes"})),
    )
    assert r[0][0] == 400 and b"count" in r[0][2]
    assert r[1][0] == 400
    assert "colour" not in settings.load(SETTINGS)["fields"]


def test_app_without_fields_replies_0():
    board, store = setup()
    r = call(board, store, request("POST", "/as", *form(**{"0": "x"})), fields=[])
    assert r[0][2] == b"0"


def test_csr_lists_and_deletes():
    board, store = setup()
    r = call(board, store, request("GET", "/csr"), request("POST", "/csr?d=/cert/other.cer"))
    listing = json.loads(r[0][2])
    assert {"n": "/cert/iasRootCa.cer", "s": len(fake_cert("Root A"))} in listing
    assert len(listing) == 2
    assert [c["n"] for c in json.loads(r[1][2])] == ["/cert/iasRootCa.cer"]
    assert store.removed == ["other.cer"]


def test_csr_never_deletes_the_last_anchor():
    board, store = setup(
        certs=[("iasRootCa.cer", fake_cert("Root A")), ("old.cer", fake_cert("Old", days=0))]
    )
    r = call(
        board,
        store,
        request("POST", "/csr?d=/cert/iasRootCa.cer"),
        request("POST", "/csr?d=/cert/old.cer"),
        request("POST", "/csr?d=/cert/iasRootCa.cer"),
    )
    assert r[0][0] == 409 and b"last" in r[0][2]  # the only usable one
    assert r[1][0] == 200  # an unusable one may go
    assert r[2][0] == 409  # the only file left
    assert store.names() == ["iasRootCa.cer"]


def test_csr_refuses_paths_outside_cert():
    board, store = setup()
    with open(BASE + "/settings.json", "w") as f:
        f.write("{}")
    r = call(
        board,
        store,
        request("POST", "/csr?d=/settings.json"),
        request("POST", "/csr?d=/cert/../settings.json"),
        request("POST", "/csr?d=/cert/%2E%2E/settings.json"),
        request("POST", "/csr?d=/cert/missing.cer"),
    )
    assert [x[0] for x in r] == [400, 400, 400, 404]
    assert os.stat(BASE + "/settings.json") and store.removed == []


def test_certupl_stores_a_ca():
    board, store = setup()
    body, ct = multipart(files=[("f", "myRoot.pem", fake_cert("Mine"))])
    r = call(board, store, request("POST", "/certupl", body, ct), request("GET", "/certs"))
    assert r[0][0] == 200 and r[0][2] == b""
    assert "myRoot.cer" in store.names()
    rep = json.loads(r[1][2])
    assert "Mine" in [c["subject"] for c in rep["certs"]]
    assert rep["clock"] is False


def test_certupl_large_file_in_many_reads():
    # Bigger than the multipart parser's buffer; every alignment of the closing boundary
    # against the parser's reads (one byte more each time) must still find it.
    board, store = setup()
    pads = list(range(600, 600 + 320)) + [7000]

    async def script(port):
        codes = []
        for pad in pads:
            body = multipart(files=[("f", "b%d.cer" % pad, fake_cert("Big", pad=pad))])
            codes.append((await _send(port, request("POST", "/certupl", *body)))[0])
        return codes

    assert run_app(board, store, script)[0] == [200] * len(pads)
    for pad in (600, 777, 919, 7000):
        with open(CERT + "/b%d.cer" % pad, "rb") as f:
            assert f.read() == fake_cert("Big", pad=pad)


def test_certupl_rejects_non_ca_and_garbage_storing_nothing():
    board, store = setup()
    before = store.names()
    r = call(
        board,
        store,
        request(
            "POST", "/certupl", *multipart(files=[("f", "leaf.cer", fake_cert("Leaf", ca=False))])
        ),
        request("POST", "/certupl", *multipart(files=[("f", "junk.cer", b"hello")])),
        request(
            "POST", "/certupl", *multipart(files=[("f", "old.cer", fake_cert("Old", days=-1))])
        ),
    )
    assert [x[0] for x in r] == [400, 400, 400]
    assert b"not a CA" in r[0][2] and b"not a certificate" in r[1][2] and b"expired" in r[2][2]
    assert store.names() == before
    assert [n for n in os.listdir(CERT) if n.endswith(".tmp")] == []


def test_certupl_refuses_traversal_names():
    board, store = setup()
    for name in (
        "../settings.cer",
        "..\\x.cer",
        "/etc/passwd",
        ".hidden.cer",
        "a b.cer",
        "x" * 40 + ".cer",
        "..cer",
    ):
        r = call(
            board,
            store,
            request("POST", "/certupl", *multipart(files=[("f", name, fake_cert("T"))])),
        )
        assert r[0][0] == 400, name
    assert sorted(os.listdir(BASE)) == ["cert", "host"]
    assert store.names() == ["iasRootCa.cer", "other.cer"]


def test_certupl_needs_exactly_one_file():
    board, store = setup()
    two = multipart(files=[("f", "a.cer", fake_cert("A")), ("f", "b.cer", fake_cert("B"))])
    r = call(
        board,
        store,
        request("POST", "/certupl", *two),
        request("POST", "/certupl", *multipart(fields=[("x", "1")])),
    )
    assert [x[0] for x in r] == [400, 400]
    assert store.names() == ["iasRootCa.cer", "other.cer"]


def test_anchor_preview_then_apply():
    board, store = setup()
    calls = []

    def preview():
        calls.append("preview")
        return {"ok": True, "message": "v7", "version": 7, "add": [{"subject": "Fetched"}]}

    def fetch(version):
        calls.append(version)
        store.add("iasRootCa2.cer", fake_cert("Fetched"), 0)
        return {"ok": True, "message": "installed 1 anchor", "version": version}

    r = call(
        board,
        store,
        request("POST", "/anchors/fetch"),  # no previewed version: refused
        request("POST", "/anchors/preview"),
        request("GET", "/csr"),
        request("POST", "/anchors/fetch", *form(v="7")),
        request("GET", "/csr"),
        fetch_anchors=fetch,
        preview_anchors=preview,
    )
    assert r[0][0] == 400 and b"preview the anchor set first" in r[0][2]
    assert json.loads(r[1][2])["add"] == [{"subject": "Fetched"}]
    assert len(json.loads(r[2][2])) == 2  # the preview changed nothing
    assert json.loads(r[3][2]) == {"ok": True, "message": "installed 1 anchor", "version": 7}
    assert calls == ["preview", 7]
    assert "/cert/iasRootCa2.cer" in [c["n"] for c in json.loads(r[4][2])]


def test_anchor_fetch_failure_is_reported():
    board, store = setup()

    def fail(*a):
        raise OSError("no route")

    r = call(
        board,
        store,
        request("POST", "/anchors/preview"),
        request("POST", "/anchors/fetch", *form(v="3")),
        fetch_anchors=fail,
        preview_anchors=fail,
    )
    assert [json.loads(x[2])["ok"] for x in r] == [False, False]
    assert "no route" in json.loads(r[0][2])["message"]
    assert "no route" in json.loads(r[1][2])["message"]
    r = call(board, store, request("POST", "/anchors/preview"))
    assert json.loads(r[0][2])["ok"] is False


def test_settings_edit_in_words():
    board, store = setup()
    r = call(
        board,
        store,
        request("GET", "/settings"),
        request(
            "POST",
            "/settings",
            *form(
                server="https://ias.example.org",
                channel="https://cdn.example/app/channel.json",
                interval="3600",
                device_name="kitchen",
                act_code="ABC123",
            ),
        ),
        request("POST", "/settings", *form(interval="5")),
        request("POST", "/settings", *form(interval="soon")),
        request("POST", "/settings", *form(server="ftp://x")),
        request("GET", "/settings"),
    )
    assert json.loads(r[0][2])["server"] == "https://iotappstory.com"
    assert r[1][2] == b"1"
    assert r[2][0] == 400 and b"interval must be 0 or 60 s to 30 days" in r[2][2]
    assert r[3][0] == 400 and b"whole number of seconds" in r[3][2]
    assert r[4][0] == 400 and b"https://" in r[4][2]
    assert json.loads(r[5][2]) == {
        "server": "https://ias.example.org",
        "channel": "https://cdn.example/app/channel.json",
        "interval": 3600,
        "device_name": "kitchen",
        "act_code": "ABC123",
    }


def test_wifi_resave_keeps_its_password():
    board, store = setup()
    r = call(
        board,
        store,
        request("POST", "/wsa", *form(s="home", p="homepass1", i="1")),
        request("POST", "/wsa", *form(s="home", p="", i="1")),  # re-saved, password not typed
        request("GET", "/wc"),
        request("POST", "/wsa", *form(s="home", p="newpass12", i="1")),
        request("POST", "/wsa", *form(s="cafe", p="", i="1")),  # another name: its own (none)
        request("POST", "/wsa", *form(s="cafe", p="cafepass1", i="1")),
        request("POST", "/wsa", *form(s="cafe", p="", o="1", i="1")),  # now an open network
    )
    assert [x[2] for x in r if x[0] == 200 and x[2] == b"1"] == [b"1"] * 6
    assert json.loads(r[2][2])[0] == {"s": "home", "k": True}
    assert _saved()["wifi"] == [{"ssid": "cafe", "password": ""}]


def test_page_served_and_unknown_404():
    board, store = setup()
    r = call(
        board,
        store,
        request("GET", "/"),
        request("GET", "/nothing"),
        request("GET", "/../settings.json"),
        request("GET", "/www/index.html"),
    )
    assert r[0][0] == 200 and r[0][1]["content-type"].startswith("text/html")
    assert b"<!DOCTYPE html>" in r[0][2] and b"<script src" not in r[0][2]
    assert [x[0] for x in r[1:]] == [404, 404, 404]


# -- hostile input ------------------------------------------------------------------------------
def test_oversized_bodies_413():
    board, store = setup()
    big = "s=" + "a" * 3000
    up, ct = multipart(files=[("f", "big.cer", b"FAKECERT {}\n" + b"A" * 13000)])
    r = call(
        board,
        store,
        request("POST", "/wsa", big, "application/x-www-form-urlencoded"),
        request("POST", "/certupl", up, ct),
        # a lying Content-Length is refused before any body is read
        b"POST /as HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
    )
    assert [x[0] for x in r] == [413, 413, 413]
    assert settings.load(SETTINGS)["wifi"] == []


def test_upload_file_over_cert_limit_413():
    board, store = setup()
    up, ct = multipart(files=[("f", "big.cer", fake_cert("Big", pad=9000))])
    r = call(board, store, request("POST", "/certupl", up, ct))
    assert r[0][0] == 413
    assert "big.cer" not in store.names()


def test_invalid_utf8_400():
    board, store = setup()
    r = call(
        board,
        store,
        request("POST", "/wsa", b"s=%FF%FE&p=&i=1", "application/x-www-form-urlencoded"),
        request("GET", "/csr?d=%C3%28"),
        request("POST", "/as", *multipart([("0", b"\xff\xfe")])),
        b"GET /\xff\xfe HTTP/1.1\r\n\r\n",
    )
    assert [x[0] for x in r] == [400, 400, 400, 400]
    assert settings.load(SETTINGS)["wifi"] == []


def test_malformed_multipart_400():
    board, store = setup()
    ct = "multipart/form-data; boundary=" + BOUNDARY
    good, _ = multipart([("0", "ok")])
    bodies = [
        b"garbage without boundary",
        good[: len(good) // 2],  # cut short
        ("--%s\r\nno colon header\r\n\r\nv\r\n--%s--\r\n" % (BOUNDARY, BOUNDARY)).encode(),
        (
            "--%s\r\nContent-Disposition: attachment\r\n\r\nv\r\n--%s--\r\n" % (BOUNDARY, BOUNDARY)
        ).encode(),
        ('--%s\r\nContent-Disposition: form-data; name="0"\r\n\r\nv' % BOUNDARY).encode(),
    ]
    r = call(board, store, *[request("POST", "/as", b, ct) for b in bodies])
    assert [x[0] for x in r] == [400] * len(bodies)
    assert "colour" not in settings.load(SETTINGS)["fields"]


def test_malformed_requests_do_not_kill_the_server():
    board, store = setup()
    r = call(
        board,
        store,
        b"NONSENSE\r\n\r\n",
        b"GET / HTTP/1.1\r\nno-colon-header\r\n\r\n",
        b"POST /as HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET /i HTTP/1.1\r\n" + b"X-A: b\r\n" * 600 + b"\r\n",  # endless headers
        b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n\r\n",
        request("GET", "/i"),
    )
    assert [x[0] for x in r[:5]] == [400, 400, 400, 400, 400]
    assert r[5][0] == 200  # still serving


def test_cross_site_post_refused():
    board, store = setup()
    b, ct = form(s="evil", p="evilpass1", i="1")
    r = call(
        board,
        store,
        request("POST", "/wsa", b, ct, {"Origin": "http://attacker.example"}),
        request("POST", "/wsa", b, ct, {"Origin": "null"}),  # a sandboxed frame
        request("POST", "/wsa", b, ct, {"Origin": None}),  # no Origin at all
        request("POST", "/wsa", b, ct),
    )
    assert [x[0] for x in r[:3]] == [403, 403, 403]
    assert b"did not come from this device's page" in r[1][2]
    assert r[3][2] == b"1"


def test_change_needs_the_session_token():
    board, store = setup()
    b, ct = form(s="evil", p="evilpass1", i="1")
    up, uct = multipart(files=[("f", "iasRootCa.cer", fake_cert("Attacker"))])
    r = call(
        board,
        store,
        request("POST", "/wsa", b, ct, {"X-IAS-Token": None}),
        request("POST", "/wsa", b, ct, {"X-IAS-Token": "0" * 32}),
        request("POST", "/certupl", up, uct, {"X-IAS-Token": "@TOKEN@x"}),
        request("POST", "/csr?d=/cert/other.cer", headers={"X-IAS-Token": None}),
        request("POST", "/close", headers={"X-IAS-Token": ""}),
        request("GET", "/token"),
    )
    assert [x[0] for x in r[:5]] == [403] * 5
    assert b"token is missing or old" in r[0][2]
    assert not _exists(SETTINGS) and store.removed == []
    with open(CERT + "/iasRootCa.cer", "rb") as f:
        assert f.read() == fake_cert("Root A")
    token = json.loads(r[5][2])["t"]
    assert len(token) == 32 and token == SESSION["token"]
    # the token may come as the query argument t (IAS-shaped tooling: /csr?d=...&t=...)
    r = call(
        board,
        store,
        request("POST", "/csr?d=/cert/other.cer&t=@TOKEN@", headers={"X-IAS-Token": None}),
    )
    assert r[0][0] == 200 and store.removed == ["other.cer"]


def test_no_get_changes_anything():
    board, store = setup()
    r = call(
        board,
        store,
        request("GET", "/csr?d=/cert/other.cer"),  # an <img> on another page
        request("GET", "/close"),
        request("GET", "/wsa?s=evil&p=evilpass1&i=1"),
        request("GET", "/i"),
    )
    assert r[0][0] == 405 and b"POST" in r[0][2]
    assert r[1][0] == 405 and r[2][0] == 405
    assert r[3][0] == 200  # still serving, not closed
    assert store.removed == [] and not _exists(SETTINGS)


def test_foreign_host_refused_or_sent_home():
    # DNS rebinding: a page on evil.example that resolves to the device sends Host: evil.example
    board, store = setup()
    b, ct = form(s="evil", p="evilpass1", i="1")
    evil = {"Host": "evil.example", "Origin": "http://evil.example"}
    r = call(
        board,
        store,
        request("GET", "/token", headers={"Host": "evil.example"}),
        request("GET", "/i", headers={"Host": "127.0.0.1"}),  # right address, wrong port
        request("POST", "/wsa", b, ct, evil),
        request("POST", "/csr?d=/cert/other.cer", headers=evil),
    )
    assert r[0][0] == 302 and r[0][1]["location"].startswith("http://127.0.0.1:")
    assert b'"t"' not in r[0][2]
    assert r[1][0] == 302
    assert r[2][0] == 403 and b"answers only to 127.0.0.1:" in r[2][2]
    assert r[3][0] == 403
    assert store.removed == [] and not _exists(SETTINGS)


def test_device_hosts():
    board, _ = setup()
    hosts = configmode.device_hosts(board, ("192.168.4.1", "", "Kitchen", "Kitchen.local"), 80)
    assert hosts() == [
        "192.168.4.1",
        "192.168.4.1:80",
        "kitchen",
        "kitchen:80",
        "kitchen.local",
        "kitchen.local:80",
    ]
    board._sta_ip = "10.0.0.9"  # joined a network: its address there names it too
    assert hosts()[-1] == "10.0.0.9"
    assert configmode.device_hosts(board, ("127.0.0.1",), 8080)() == [
        "127.0.0.1:8080",
        "10.0.0.9:8080",
    ]


def test_token_compare():
    t = webguard.new_token()
    assert len(t) == 32 and t != webguard.new_token()
    assert webguard.same_token(t, t)
    for bad in (None, "", t[:-1], t[:-1] + ("0" if t[-1] != "0" else "1"), t + "0"):
        assert not webguard.same_token(bad, t)


def test_cert_name_rules():
    assert webapp.cert_name("iasRootCa.cer") == "iasRootCa.cer"
    assert webapp.cert_name("mine.PEM") == "mine.cer"
    assert webapp.cert_name("a-b_c.1.crt") == "a-b_c.1.cer"
    for bad in ("", ".cer", "../x.cer", "a/b.cer", "c:\\x.cer", "..", "a..b.cer", "é.cer"):
        try:
            webapp.cert_name(bad)
        except webguard.BadRequest:
            continue
        raise AssertionError("accepted %r" % bad)


def test_escape():
    assert webguard.escape(EVIL) == (
        "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;&#39;&quot;"
    )


# -- config mode --------------------------------------------------------------------------------
def test_configmode_close_and_announce():
    board, store = setup()
    board._sta_ip = "10.0.0.5"  # joined a network: IAS announces on entry and exit
    said = []
    port = _port()

    async def client():
        await asyncio.sleep(0.3)
        return await _send(port, request("POST", "/close"))

    # run config mode and a client in the same event loop: start the client from a task
    reason, reply = run_config_with(
        client,
        board,
        store,
        SETTINGS,
        FIELDS,
        announce=said.append,
        port=port,
        host="127.0.0.1",
        www_dir=WWW,
    )
    assert reason == "close"
    assert reply[0] == 200
    assert said == ["1", "0"]
    s = settings.load(SETTINGS)
    assert len(s["ap_password"]) == 12  # made at first use and kept
    assert board._ap is None  # the access point is down again


def test_configmode_idle_timeout_and_ap():
    board, store = setup()
    s = settings.load(SETTINGS)
    s["device_name"] = "kitchen"
    settings.save(s, SETTINGS)
    said = []
    seen = {}
    orig_stop = board.ap_stop

    def ap_stop():
        seen["ap"] = board._ap
        orig_stop()

    board.ap_stop = ap_stop
    reason = configmode.run(
        board,
        store,
        SETTINGS,
        FIELDS,
        announce=said.append,
        port=_port(),
        host="127.0.0.1",
        timeout_s=0.4,
        www_dir=WWW,
    )
    assert reason == "timeout"
    assert said == []  # not joined to a network: nothing to announce
    ssid, pw = seen["ap"]
    assert ssid == "kitchen" and len(pw) == 12 and pw == settings.load(SETTINGS)["ap_password"]


def test_ap_open_only_when_configured():
    board, _ = setup()
    s = settings.load(SETTINGS)
    s["ap_open"] = True
    settings.save(s, SETTINGS)
    assert configmode.ap_credentials(board, SETTINGS) == ("ias-%d" % board.chip_id(), None)
    s["ap_open"] = False
    s["ap_password"] = "given-password"
    settings.save(s, SETTINGS)
    assert configmode.ap_credentials(board, SETTINGS)[1] == "given-password"


def test_new_passwords_differ():
    pws = set(configmode.new_password() for _ in range(20))
    assert len(pws) == 20
    for pw in pws:
        assert len(pw) == 12


def test_configmode_run_with_a_device():
    # device.Device passes itself: its board, store, app fields and slots (the page's version)
    board, store = setup()
    board._sta_ip = "10.0.0.7"
    said = []

    class App:
        fields = FIELDS

    class Dev:
        pass

    class Slots:
        def installed_artifact(self):
            return {"name": "Blink", "version": "2.0"}

    dev = Dev()
    dev.board, dev.store, dev.app, dev.slots = board, store, App(), Slots()
    fetch = lambda v: {"ok": True, "message": "fetched", "version": v}  # noqa: E731
    from ias import state

    dev.state = state.State(BASE + "/state.json")
    dev.state.set("last_call", {"outcome": "no-update", "reason": "not_newer", "since": 1})
    port = _port()
    got = {}

    async def client():
        await asyncio.sleep(0.2)
        got["app"] = await _send(port, request("GET", "/app"))
        got["fetch"] = await _send(port, request("POST", "/anchors/fetch", *form(v="9")))
        got["info"] = await _send(port, request("GET", "/i"))
        await _send(port, request("POST", "/close"))

    reason, _ = run_config_with(
        client,
        dev,
        settings_path=SETTINGS,
        fetch_anchors=fetch,
        announce=said.append,
        port=port,
        host="127.0.0.1",
        www_dir=WWW,
    )
    assert reason == "close"
    assert [f["l"] for f in json.loads(got["app"][2])] == ["Colour", "Count", "Enabled"]
    assert json.loads(got["fetch"][2])["version"] == 9
    info = json.loads(got["info"][2])
    assert (info["an"], info["av"]) == ("Blink", "2.0")  # the device's slot pointer
    assert info["lc"] == {"outcome": "no-update", "reason": "not_newer", "since": 1}
    assert info["cv"] == configmode.CLIENT_VERSION and info["fv"].startswith("micropython-")
    assert said == ["1", "0"]


# -- the log and the captive portal -------------------------------------------------------------
def test_log_route_returns_the_last_lines():
    from ias import log

    board, store = setup()
    for p in (log.PATH, log.OLD):
        try:
            os.remove(p)
        except OSError:
            pass
    for i in range(30):
        log.info("test", "line %d" % i)
        if i in (9, 19):
            log.flush()  # 0..19 in the file, 20..29 still in RAM: /log shows both
    (st, h, body), (st2, _, body2), (st3, _, _) = call(
        board,
        store,
        request("GET", "/log"),
        request("GET", "/log?n=3"),
        request("GET", "/log?n=x"),
    )
    assert st == 200 and h["content-type"] == "text/json"
    lines = json.loads(body)["lines"]
    assert len(lines) == 20
    assert lines[0].endswith("I test: line 10") and lines[-1].endswith("I test: line 29")
    assert [ln.split(" ", 1)[1] for ln in json.loads(body2)["lines"]] == [
        "I test: line 27",
        "I test: line 28",
        "I test: line 29",
    ]
    assert st2 == 200 and st3 == 400
    log.flush()


PROBE_PATHS = (
    "/generate_204",
    "/hotspot-detect.html",
    "/ncsi.txt",
    "/connecttest.txt",
    "/canonical.html",
    "/success.txt",
)


def test_connectivity_probes_redirect_to_the_page():
    board, store = setup()
    reqs = [request("GET", p) for p in PROBE_PATHS]
    for st, h, body in call(board, store, *reqs):
        assert st == 302, st
        assert h["location"] == "/"
        assert body == b""


def _dns_query(name, qtype=1, ident=0x1234):
    q = bytes((ident >> 8, ident & 0xFF, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0))
    for label in name.split("."):
        q += bytes((len(label),)) + label.encode()
    return q + bytes((0, 0, qtype, 0, 1))


def test_configmode_captive_portal_dns_and_probe():
    # Config mode as a phone meets it: a DNS query for the probe's host name is answered with
    # the access point's address, and the probe itself is redirected to the page.
    import socket

    board, store = setup()
    board.dns_port = 20000 + int.from_bytes(os.urandom(2), "little") % 30000
    port = _port()
    got = {}

    async def client():
        await asyncio.sleep(0.2)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.sendto(
            _dns_query("connectivitycheck.gstatic.com"),
            socket.getaddrinfo("127.0.0.1", board.dns_port)[0][-1],
        )
        reply = None
        for _ in range(50):
            await asyncio.sleep(0.05)
            try:
                reply = s.recv(512)
                break
            except OSError:
                pass
        s.close()
        got["dns"] = reply
        got["probe"] = await _send(port, request("GET", "/generate_204"))
        await _send(port, request("POST", "/close"))

    reason, _ = run_config_with(
        client, board, store, SETTINGS, FIELDS, port=port, host="127.0.0.1"
    )
    assert reason == "close"
    reply = got["dns"]
    assert reply is not None, "no DNS answer"
    assert reply[:2] == b"\x12\x34" and reply[7] == 1  # our id, one answer
    assert reply[-4:] == bytes((127, 0, 0, 1))  # the virtual board's AP address
    st, h, _ = got["probe"]
    assert st == 302 and h["location"] == "http://127.0.0.1:%d/" % port
