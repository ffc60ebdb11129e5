"""The config page in a real browser (Debian's chromium, headless, driven by Playwright) against
config mode served by the MicroPython unix port: certificate list with real generated anchors,
"Get IAS root cert", uploads (a CA and a refused server certificate), delete, a Wi-Fi network,
an app field, markup in SSIDs and certificate names shown as text, and Exit. Screenshots go to
test-artifacts/ (phone and desktop viewports).
"""

import hashlib
import http.server
import os
import threading
from functools import partial
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from webfixture import ConfigServer, files_of, raw_request

from tools import pki

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
EVIL = '<img src=x onerror="window.pwned=1">'
FIELDS = [
    {"name": "colour", "label": "Colour", "default": "red", "max": 10, "type": "L"},
    {"name": "mode", "label": "Mode:Slow,Fast", "default": "0", "max": 1, "type": "S"},
    {"name": "enabled", "label": "Enabled", "default": "1", "max": 1, "type": "C"},
]

pytestmark = pytest.mark.browser


def _pem(issued):
    return issued.cert.public_bytes(serialization.Encoding.PEM)


def _sha(issued):
    return hashlib.sha256(issued.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


ATTACK_PAGE = """<!DOCTYPE html><html><body>
<script>
var D = "DEVICE";
var URLENC = "application/x-www-form-urlencoded", WIFI = {s: "evil", p: "evilpass1", i: "1"};
// one attack at a time: the device serves a few connections at once, as a real one does
function framed(sandbox, action, enctype, fields, file) {
  // a form posted from a frame: sandboxed (Origin: null) or of this page's origin
  var d = {action: D + action, enctype: enctype, fields: fields, file: file};
  var f = document.createElement("iframe");
  if (sandbox) f.sandbox = "allow-scripts allow-forms";
  f.srcdoc = "<body><script>var d = " + JSON.stringify(d) + ";" +
    "var f = document.createElement('form'); f.method = 'POST'; f.action = d.action;" +
    "f.enctype = d.enctype; for (var k in d.fields) { var i = document.createElement('input');" +
    "i.name = k; i.value = d.fields[k]; f.appendChild(i); }" +
    "if (d.file) { var i = document.createElement('input'); i.type = 'file'; i.name = 'f';" +
    "var t = new DataTransfer(); t.items.add(new File([d.file], 'iasRootCa.cer'));" +
    "i.files = t.files;" +
    "f.appendChild(i); } document.body.appendChild(f);" +
    "onload = function () { f.submit(); };<" + "/script></body>";
  return new Promise(function (done) {
    var loads = 0;
    f.onload = function () { if (++loads === 2) done(); };  // the form page, then the reply
    document.body.appendChild(f);
  });
}
function step(n) { return function (x) { window.step = n; return x; }; }
function settle(p) { return p.then(function () {}, function () {}); }
var pem;
fetch("/attacker.pem").then(function (r) { return r.text(); }).then(function (t) {
  pem = t; window.step = 1;
  return framed(false, "/wsa", URLENC, WIFI);
}).then(function () {
  window.step = 2;
  var fd = new FormData(); fd.append("f", new Blob([pem]), "iasRootCa.cer");
  return settle(fetch(D + "/certupl", {method: "POST", mode: "no-cors", body: fd}));
}).then(function () {
  return settle(fetch(D + "/csr?d=/cert/evil.cer", {method: "POST", mode: "no-cors"}));
}).then(function () {
  return settle(fetch(D + "/close", {method: "POST", mode: "no-cors"}));
}).then(function () {
  return fetch(D + "/token").then(function (r) { return r.json(); })
    .then(function (j) { window.stolen = j.t; }, function () { window.blocked = true; });
}).then(function () {
  return new Promise(function (done) {
    var img = new Image(); img.onload = img.onerror = done;
    img.src = D + "/csr?d=/cert/iasRootCa.cer";
  });
}).then(function () {
  window.step = 7;
  return framed(true, "/certupl", "multipart/form-data", {}, pem);
}).then(function () {
  window.step = 8;
  return framed(true, "/wsa", URLENC, WIFI);
}).then(function () { window.attackDone = true; });
</script></body></html>"""


class _Attacker:
    """Another origin: a second local HTTP server with the attacker's page and root."""

    def __init__(self, folder, device_url, pem):
        folder.mkdir()
        (folder / "index.html").write_text(ATTACK_PAGE.replace("DEVICE", device_url))
        (folder / "attacker.pem").write_bytes(pem)
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_other_pages_change_nothing(tmp_path, browser):
    root_a = pki.make_ca("IAS Test Root A")
    attacker = pki.make_ca("Attacker Root")
    srv = ConfigServer(
        tmp_path / "dev",
        anchors=[("iasRootCa.cer", _pem(root_a)), ("evil.cer", _pem(pki.make_ca("Other")))],
        fetch=("iasRootCa2.cer", _pem(pki.make_ca("Fetched"))),
        fields=FIELDS,
        settings={"wifi": [{"ssid": "lab", "password": "labpass1"}]},
    )
    evil = _Attacker(tmp_path / "evil", srv.url, _pem(attacker))
    with srv:
        before = files_of(srv.dir)
        ctx = browser.new_context()
        seen = []
        ctx.on("response", lambda r: seen.append((r.request.method, r.url, r.status)))
        page = ctx.new_page()
        page.goto(evil.url + "/")
        want = {
            ("POST", "/certupl", 403),  # fetch no-cors
            ("POST", "/csr?d=/cert/evil.cer", 403),
            ("POST", "/close", 403),
            ("GET", "/csr?d=/cert/iasRootCa.cer", 405),  # an <img>
        }

        def got():
            return {(m, u[len(srv.url) :], st) for m, u, st in seen if u.startswith(srv.url)}

        try:
            page.wait_for_function("window.attackDone === true", timeout=15000)
        except Exception:
            raise AssertionError((page.evaluate("window.step"), seen))
        assert page.evaluate("window.blocked") is True
        for _ in range(50):  # a response may be reported a little after the page moved on
            if want <= got():
                break
            page.wait_for_timeout(100)
        assert want <= got(), got()
        # the three forms posted from frames (another origin; sandboxed: Origin null): each
        # frame shows the device's refusal
        framed = sorted((f.url[len(srv.url) :], f.content()) for f in page.frames[1:])
        assert [u for u, _ in framed] == ["/certupl", "/wsa", "/wsa"], framed
        for _, html in framed:
            assert "refused: the request did not come from this device's page" in html
        assert page.evaluate("window.stolen") is None  # the token is not readable elsewhere
        ctx.close()

        # DNS rebinding: the attacker's name resolves to the device; a plain client sends
        # what such a page would (its Host, its Origin, a guessed token)
        bad = {"Host": "evil.example", "Origin": "http://evil.example"}
        st, loc, body = raw_request(srv.port, "GET", "/token", {"Host": "evil.example"})
        assert st == 302 and loc == srv.url + "/" and b'"t"' not in body
        up = b"--b\r\nContent-Disposition: form-data; name=f; filename=iasRootCa.cer\r\n\r\n"
        up += _pem(attacker) + b"\r\n--b--\r\n"
        for path, body, ctype in (
            ("/certupl", up, "multipart/form-data; boundary=b"),
            ("/wsa", b"s=evil&p=evilpass1&i=1", "application/x-www-form-urlencoded"),
            ("/csr?d=/cert/evil.cer", b"", "text/plain"),
        ):
            hdrs = dict(bad, **{"Content-Type": ctype, "X-IAS-Token": "0" * 32})
            st, _, reply = raw_request(srv.port, "POST", path, hdrs, body)
            assert st == 403 and b"answers only to" in reply, (path, reply)
        st, loc, _ = raw_request(
            srv.port, "GET", "/csr?d=/cert/evil.cer", {"Host": "evil.example"}
        )
        assert st == 302

        assert files_of(srv.dir) == before  # nothing changed in the board's flash
        assert srv.proc.poll() is None  # and config mode still runs
    evil.close()


def _status(page, want):
    """Wait for the status line to say `want`; returns all it says."""
    try:
        page.wait_for_function(
            "w => document.getElementById('status').textContent.includes(w)",
            arg=want,
            timeout=8000,
        )
    except Exception:
        raise AssertionError("status says %r, not %r" % (page.text_content("#status"), want))
    return page.text_content("#status")


def test_config_page_end_to_end(tmp_path, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    root_a = pki.make_ca("IAS Test Root A")
    root_b = pki.make_ca(EVIL)  # markup in a subject must show as text
    fetched = pki.make_ca("IAS Test Root 2026")
    mine = pki.make_ca("My Own Root")
    leaf = pki.make_leaf(root_a)
    (tmp_path / "upload").mkdir()
    mine_file = tmp_path / "upload" / "myroot.pem"
    mine_file.write_bytes(_pem(mine))
    leaf_file = tmp_path / "upload" / "server.pem"
    leaf_file.write_bytes(_pem(leaf))

    srv = ConfigServer(
        tmp_path / "dev",
        anchors=[("iasRootCa.cer", _pem(root_a)), ("evil.cer", _pem(root_b))],
        fetch=("iasRootCa2.cer", _pem(fetched)),
        fields=FIELDS,
        networks=[
            {"ssid": "lab", "password": "labpass1", "rssi": -40},
            {"ssid": EVIL, "password": "", "rssi": -60},
        ],
    )
    dialogs = []
    with srv:
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
        page.on("dialog", lambda d: (dialogs.append((d.type, d.message)), d.accept()))
        page.goto(srv.url + "/")
        page.wait_for_function("document.querySelectorAll('#info-list dd').length > 0")
        assert "24:0A:C4:AB:CD:EF" in page.text_content("#info-list")
        page.screenshot(path=str(ARTIFACTS / "config-phone-info.png"), full_page=True)

        # -- certificates: the list as the store reports it
        page.click("nav button[data-tab=certs]")
        page.wait_for_selector(".cert[data-name='evil.cer']")
        cards = page.query_selector_all(".cert")
        assert sorted(c.get_attribute("data-name") for c in cards) == ["evil.cer", "iasRootCa.cer"]
        ias = page.text_content(".cert[data-name='iasRootCa.cer']")
        assert "IAS Test Root A" in ias and _sha(root_a) in ias and "usable" in ias
        # root A ends 3650 days after it was made: 3650 whole days are left within the second
        # it was made, 3649 after (the page counts whole days from the board's clock)
        assert "Valid until" in ias and "Days left" in ias
        assert ("Days left3649" in ias) or ("Days left3650" in ias), ias
        assert EVIL in page.text_content(".cert[data-name='evil.cer']")  # as text
        assert page.query_selector("main img") is None
        page.screenshot(path=str(ARTIFACTS / "config-phone-certs.png"), full_page=True)

        # -- "Get IAS root cert": the device installs the bundle itself
        page.click("#fetch-btn")
        assert "installed anchor bundle v3" in _status(page, "installed")
        page.wait_for_selector(".cert[data-name='iasRootCa2.cer']")
        assert _sha(fetched) in page.text_content(".cert[data-name='iasRootCa2.cer']")

        # -- upload: a CA is stored (as .cer), a server certificate is refused
        page.set_input_files("#upload-file", str(leaf_file))
        page.click("#upload-btn")
        assert "not_ca" in _status(page, "not stored")
        page.set_input_files("#upload-file", str(mine_file))
        page.click("#upload-btn")
        _status(page, "Uploaded myroot.pem")
        page.wait_for_selector(".cert[data-name='myroot.cer']")
        assert srv.cert_names() == ["evil.cer", "iasRootCa.cer", "iasRootCa2.cer", "myroot.cer"]

        # -- delete, after the browser's confirm
        page.click(".cert[data-name='evil.cer'] button.del")
        _status(page, "Deleted evil.cer")
        page.wait_for_selector(".cert[data-name='evil.cer']", state="detached")
        assert ("confirm", "Delete evil.cer?") in dialogs
        assert "evil.cer" not in srv.cert_names()

        # -- Wi-Fi: a scan shows the hostile SSID as text; save network 2
        page.click("nav button[data-tab=wifi]")
        page.wait_for_selector("#ssid-2")
        page.click("#scan-btn")
        page.wait_for_selector("#scan-list li")
        assert EVIL in page.text_content("#scan-list")
        page.focus("#ssid-1")
        page.click("#scan-list li:first-child button")
        assert page.input_value("#ssid-1") == "lab"
        page.fill("#pass-1", "labpass1")
        page.click("#save-1")
        _status(page, "Network 1 saved: lab")
        page.fill("#ssid-2", "back room")
        page.fill("#pass-2", "backroom-pw")
        page.click("#save-2")
        _status(page, "Network 2 saved")
        assert srv.saved_settings()["wifi"] == [
            {"ssid": "lab", "password": "labpass1"},
            {"ssid": "back room", "password": "backroom-pw"},
        ]
        page.fill("#ssid-3", "x")
        page.fill("#pass-3", "short")
        page.click("#save-3")
        assert "8 to 63" in _status(page, "8 to 63")
        page.screenshot(path=str(ARTIFACTS / "config-phone-wifi.png"), full_page=True)

        # -- App fields: text, select and checkbox, sent as multipart FormData
        page.click("nav button[data-tab=app]")
        page.wait_for_selector("#field-0")
        assert page.input_value("#field-0") == "red"
        page.fill("#field-0", EVIL)  # cut to 10 characters by maxlength, kept as text
        page.select_option("#field-1", "1")
        page.uncheck("#field-2")
        page.click("#fields-save")
        _status(page, "App settings saved")
        assert srv.saved_settings()["fields"] == {"colour": EVIL[:10], "mode": "1", "enabled": "0"}
        page.screenshot(path=str(ARTIFACTS / "config-phone-app.png"), full_page=True)

        # -- a desktop view of the certificate page too
        desk = browser.new_page(viewport={"width": 1280, "height": 900})
        desk.goto(srv.url + "/")
        desk.click("nav button[data-tab=certs]")
        desk.wait_for_selector(".cert[data-name='myroot.cer']")
        desk.screenshot(path=str(ARTIFACTS / "config-desktop-certs.png"), full_page=True)
        desk.close()

        assert page.evaluate("window.pwned") is None  # no injected markup ever ran
        assert [d for d in dialogs if d[0] != "confirm"] == []

        # -- Exit: config mode ends and reports why
        page.click("nav button[data-tab=exit]")
        page.click("#exit-btn")
        _status(page, "Config mode closed")
        result = srv.wait_exit(timeout=10)
    # joined to no network (access point only): nothing to announce, as IAS
    assert result == {"reason": "close", "announced": []}, srv.output
