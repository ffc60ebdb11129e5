"""The config page in a real browser (Debian's chromium, headless, driven by Playwright) against
config mode served by the MicroPython unix port (one board for the module, tests in order):
pages on another origin change nothing; Info (versions, last call home, earliest root expiry,
the activation code as known, the last lines of the device log); every setting edited and
refused in words; Wi-Fi networks keep their passwords; app fields; certificates (actions
first, collapsed list, "Get IAS root cert" previews the change before installing, uploads,
delete); markup shown as text; screenshots of each tab at phone and desktop size (into
test-artifacts/screens/, or docs/screens/ with `make screens`); "Save and restart" saves, then Exit.
"""

import hashlib
import http.server
import os
import struct
import threading
from functools import partial
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from webfixture import ConfigServer, files_of, raw_request

from tools import pki

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
DOC_SCREENS = REPO / "docs" / "screens"
# A test run leaves the tree clean: shots go to test-artifacts/ unless `make screens` asks for
# docs/ (IAS_SCREENS=docs), and the committed ones in docs/screens are checked either way.
SCREENS = (
    DOC_SCREENS if os.environ.get("IAS_SCREENS") == "docs" else REPO / "test-artifacts" / "screens"
)
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
LAST_CALL = {"outcome": "no-update", "reason": "not_newer", "since": 1796000000}
EVIL = '<img src=x onerror="window.pwned=1">'
LOG = [  # the board's flash log: before NTP answered, then on the clock; markup in a message
    "946684812 I net: Wi-Fi up, ip 192.168.4.2",
    "1796000000 I callhome: calling home (boot)",
    "1796000003 W callhome: failed: untrusted " + EVIL,
    "1796000064 E ota: rollback: 2.0 not confirmed within 3 boots",
]
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


def test_other_pages_change_nothing(tmp_path, browser, board):
    srv = board
    attacker = pki.make_ca("Attacker Root")
    evil = _Attacker(tmp_path / "evil", srv.url, _pem(attacker))
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
    st, loc, _ = raw_request(srv.port, "GET", "/csr?d=/cert/evil.cer", {"Host": "evil.example"})
    assert st == 302

    assert files_of(srv.dir) == before  # nothing changed in the board's flash
    assert srv.proc.poll() is None  # and config mode still runs
    evil.close()


def _act(page, selector, want):
    """Click `selector` and wait for the status line to say `want` (cleared first, so an earlier
    message cannot answer for this click)."""
    page.evaluate("document.getElementById('status').textContent = ''")
    page.click(selector)
    return _status(page, want)


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


@pytest.fixture(scope="module")
def keys():
    return {
        "a": pki.make_ca("IAS Test Root A"),
        "evil": pki.make_ca(EVIL),  # markup in a subject must show as text
        "fetched": pki.make_ca("IAS Test Root 2026"),
        "mine": pki.make_ca("My Own Root"),
    }


@pytest.fixture(scope="module")
def board(tmp_path_factory, keys):
    """One config-mode board for the module: iasRootCa.cer and a root whose subject is markup;
    the signed set "Get IAS root cert" finds keeps root A, adds the 2026 root and drops the
    other; one saved Wi-Fi network; a recorded last call home."""
    srv = ConfigServer(
        tmp_path_factory.mktemp("cfgpage") / "dev",
        anchors=[("iasRootCa.cer", _pem(keys["a"])), ("evil.cer", _pem(keys["evil"]))],
        fetch=("iasRootCa2.cer", _pem(keys["fetched"])),
        bundle=[_pem(keys["a"]), _pem(keys["fetched"])],
        fields=FIELDS,
        networks=[
            {"ssid": "lab", "password": "labpass1", "rssi": -40},
            {"ssid": EVIL, "password": "", "rssi": -60},
        ],
        settings={"wifi": [{"ssid": "lab", "password": "labpass1"}]},
        state={"last_call": LAST_CALL},
        log=LOG,
        timeout_s=300,
    )
    with srv:
        yield srv


@pytest.fixture
def page(browser, board):
    """The config page on a phone, opened fresh; records dialogs; no injected markup ran."""
    pg = browser.new_page(viewport=PHONE)
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append((d.type, d.message)), d.accept()))
    pg.goto(board.url + "/")
    pg.wait_for_function("document.querySelectorAll('#info-list dd').length > 0")
    yield pg
    assert pg.evaluate("window.pwned") is None  # no markup from the device ever ran
    pg.close()


def _tab(page, name):
    page.click("nav button[data-tab=%s]" % name)


def _info(page):
    dts = page.query_selector_all("#info-list dt")
    return {d.text_content(): d.evaluate("e => e.nextElementSibling.textContent") for d in dts}


def test_info_shows_versions_last_call_and_expiry(page, board):
    info = _info(page)
    assert info["Client"].startswith("ias-micropython 0.1.0 (IAS library 2.1.0")
    assert info["Firmware"].startswith("micropython-") and info["App"] == "none installed"
    # the last call home as the device recorded it, in words, with its date
    assert info["Last call home"] == (
        "no update (the device already has this or a newer version), since 2026-11-30 00:53 UTC"
    )
    # root A (10 years) expires first among the usable roots
    assert info["Earliest root expiry"].startswith(keys_until(page, "iasRootCa.cer"))
    assert "days" in info["Earliest root expiry"]
    assert info["Activation code"] == "none saved"  # not "Activated: yes" for anything
    assert info["MAC"] == "24:0A:C4:AB:CD:EF"


def _log_rows(page):
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('#log-list li')).map("
        "li => Array.from(li.children).map(c => c.textContent))"
    )


def test_info_shows_the_last_lines_of_the_log(browser, page, board):
    page.wait_for_function("document.querySelectorAll('#log-list li').length >= 4")
    rows = _log_rows(page)
    # the flash log's lines, oldest first, dates readable, levels in words, markup as text
    assert rows[:4] == [
        ["clock not set, 12 s after start", "info", "net: Wi-Fi up, ip 192.168.4.2"],
        ["2026-11-30 00:53:20 UTC", "info", "callhome: calling home (boot)"],
        ["2026-11-30 00:53:23 UTC", "warning", "callhome: failed: untrusted " + EVIL],
        ["2026-11-30 00:54:24 UTC", "error", "ota: rollback: 2.0 not confirmed within 3 boots"],
    ]
    assert page.query_selector("#log-list img") is None
    # on a phone the list is collapsed (its summary says how many lines); a tap opens it
    assert page.evaluate("document.getElementById('log-box').open") is False
    assert not page.is_visible("#log-list")
    assert "(last %d lines, oldest first)" % len(rows) in page.text_content("#log-box summary")
    page.click("#log-box summary")
    assert page.is_visible("#log-list li >> nth=3")
    # on a desktop it is open from the start
    wide = browser.new_page(viewport=DESKTOP)
    wide.goto(board.url + "/")
    wide.wait_for_function("document.querySelectorAll('#log-list li').length >= 4")
    assert wide.evaluate("document.getElementById('log-box').open") is True
    assert wide.is_visible("#log-list li >> nth=3")
    assert wide.evaluate("window.pwned") is None
    wide.close()


def keys_until(page, name):
    return page.evaluate(
        "n => fetch('/certs').then(r => r.json()).then(r => r.certs.find(c => c.name === n)"
        ".valid_until)",
        name,
    )


def test_every_setting_editable_and_refused_in_words(page, board):
    _tab(page, "settings")
    page.wait_for_function("document.getElementById('set-server').value !== ''")
    assert page.input_value("#set-server") == "https://iotappstory.com"
    page.fill("#set-interval", "5")
    assert "interval must be 0 or 60 s to 30 days" in _act(page, "#settings-save", "interval must")
    page.fill("#set-interval", "3600")
    page.fill("#set-server", "ftp://updates.example")
    assert "server must start with https:// or http://" in _act(page, "#settings-save", "https://")
    page.fill("#set-device_name", "x" * 29)
    page.fill("#set-server", "https://updates.example")
    page.fill("#set-channel", "https://cdn.example/blink/channel.json")
    page.fill("#set-act_code", "AB12CD")
    _act(page, "#settings-save", "Settings saved.")
    s = board.saved_settings()
    assert (s["server"], s["channel"], s["interval"], s["act_code"]) == (
        "https://updates.example",
        "https://cdn.example/blink/channel.json",
        3600,
        "AB12CD",
    )
    assert s["device_name"] == "x" * 29
    page.fill("#set-device_name", "kitchen")
    _act(page, "#settings-save", "Settings saved.")
    assert board.saved_settings()["device_name"] == "kitchen"
    _tab(page, "info")
    page.wait_for_function("document.getElementById('title').textContent === 'kitchen'")
    assert _info(page)["Activation code"] == (
        "AB12CD saved; the IOTAppStory server checks it when the device calls home"
    )


def test_wifi_keeps_saved_password_and_scan_shows_text(page, board):
    _tab(page, "wifi")
    page.wait_for_selector("#ssid-3")
    assert page.input_value("#ssid-1") == "lab"
    assert page.get_attribute("#pass-1", "placeholder") == "saved; type to change"
    _act(page, "#save-1", "Network 1 saved: lab")  # re-saved without typing the password
    assert board.saved_settings()["wifi"] == [{"ssid": "lab", "password": "labpass1"}]
    page.click("#scan-btn")
    page.wait_for_selector("#scan-list li")
    assert EVIL in page.text_content("#scan-list")  # as text
    page.fill("#ssid-2", "back room")
    page.fill("#pass-2", "short")
    assert "8 to 63" in _act(page, "#save-2", "8 to 63")
    page.fill("#pass-2", "backroom-pw")
    _act(page, "#save-2", "Network 2 saved: back room")
    page.fill("#ssid-3", "cafe")
    page.check("#open-3")
    _act(page, "#save-3", "Network 3 saved: cafe")
    assert board.saved_settings()["wifi"] == [
        {"ssid": "lab", "password": "labpass1"},
        {"ssid": "back room", "password": "backroom-pw"},
        {"ssid": "cafe", "password": ""},
    ]
    page.wait_for_function("document.getElementById('open-3').checked")  # shown as saved
    assert not page.is_checked("#open-1")
    page.fill("#pass-3", "cafepass1")  # typing a password makes it a secured network again
    _act(page, "#save-3", "Network 3 saved: cafe")
    assert board.saved_settings()["wifi"][2] == {"ssid": "cafe", "password": "cafepass1"}


def test_app_fields(page, board):
    _tab(page, "app")
    page.wait_for_selector("#field-0")
    assert page.input_value("#field-0") == "red"
    page.fill("#field-0", EVIL)  # cut to 10 characters by maxlength, kept as text
    page.select_option("#field-1", "1")
    page.uncheck("#field-2")
    _act(page, "#fields-save", "App settings saved")
    assert board.saved_settings()["fields"] == {"colour": EVIL[:10], "mode": "1", "enabled": "0"}


def test_certificates_preview_before_install(page, board, keys):
    _tab(page, "certs")
    page.wait_for_selector(".cert[data-name='evil.cer']")
    # a phone sees the actions first; the list is collapsed
    assert page.locator("#fetch-btn").bounding_box()["y"] < 300
    assert (
        page.locator(".cert").first.bounding_box()["y"]
        > page.locator("#fetch-btn").bounding_box()["y"]
    )
    assert page.evaluate("[...document.querySelectorAll('.cert')].every(d => !d.open)")
    assert EVIL in page.text_content(".cert[data-name='evil.cer']")  # as text
    page.click(".cert[data-name='iasRootCa.cer'] summary")
    ias = page.text_content(".cert[data-name='iasRootCa.cer']")
    assert "IAS Test Root A" in ias and _sha(keys["a"]) in ias and "usable" in ias
    assert page.query_selector("main img") is None

    # "Get IAS root cert": first what it would change, and nothing changed yet
    before = board.cert_names()
    page.click("#fetch-btn")
    page.wait_for_selector("#preview:not([hidden])")
    add = page.text_content("ul[data-kind=add]")
    remove = page.text_content("ul[data-kind=remove]")
    keep = page.text_content("ul[data-kind=keep]")
    assert "IAS Test Root 2026" in add
    assert "evil.cer" in remove and EVIL in remove
    assert "iasRootCa.cer" in keep and "IAS Test Root A" in keep
    assert "Nothing has changed yet" in page.text_content("#preview-title")
    assert board.cert_names() == before
    _act(page, "#cancel-btn", "Nothing was changed.")
    assert board.cert_names() == before
    page.click("#fetch-btn")
    page.wait_for_selector("#preview:not([hidden])")
    assert "installed anchor set v3" in _act(page, "#apply-btn", "installed")
    page.wait_for_selector(".cert[data-name='iasRootCa2.cer']")
    assert board.cert_names() == ["evil.cer", "iasRootCa.cer", "iasRootCa2.cer"]


def test_certificate_upload_in_words_and_delete(page, board, keys, tmp_path):
    mine = tmp_path / "myroot.pem"
    mine.write_bytes(_pem(keys["mine"]))
    leaf = tmp_path / "server.pem"
    leaf.write_bytes(_pem(pki.make_leaf(keys["a"])))
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"garbage")
    _tab(page, "certs")
    page.wait_for_selector(".cert[data-name='evil.cer']")
    page.set_input_files("#upload-file", str(leaf))
    msg = _act(page, "#upload-btn", "not stored")
    assert "this is not a CA certificate" in msg and "not_ca" not in msg, msg
    page.set_input_files("#upload-file", str(junk))
    msg = _act(page, "#upload-btn", "not stored")
    assert "this file is not a certificate" in msg and "garbage:" not in msg, msg
    page.set_input_files("#upload-file", str(mine))
    _act(page, "#upload-btn", "Uploaded myroot.pem")
    page.wait_for_selector(".cert[data-name='myroot.cer']")
    assert "myroot.cer" in board.cert_names()
    page.click(".cert[data-name='evil.cer'] summary")
    _act(page, ".cert[data-name='evil.cer'] button.del", "Deleted evil.cer")
    page.wait_for_selector(".cert[data-name='evil.cer']", state="detached")
    assert ("confirm", "Delete evil.cer?") in page.dialogs
    assert "evil.cer" not in board.cert_names()


TABS = {  # each tab and what it must show once rendered
    "info": "#info-list dd >> nth=9",
    "settings": "#set-server",
    "wifi": "#ssid-3",
    "app": "#field-2",
    "certs": ".cert >> nth=1",
    "exit": "#exit-btn",
}


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def test_screenshots_of_every_tab(browser, board):
    SCREENS.mkdir(parents=True, exist_ok=True)
    for size, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        pg = browser.new_page(viewport=viewport)
        pg.goto(board.url + "/")
        for tab, key in TABS.items():
            out = SCREENS / ("%s-%s.png" % (tab, size))
            if out.exists():
                out.unlink()
            _tab(pg, tab)
            pg.wait_for_selector("section#%s.on" % tab)
            pg.wait_for_selector("section#%s %s" % (tab, key), state="visible")
            if tab == "info":  # the log's lines too (collapsed on a phone, open on a desktop)
                pg.wait_for_function("document.querySelectorAll('#log-list li').length >= 4")
            # the tab's own actions come before its content
            first = pg.query_selector("section#%s .actions, section#%s .card" % (tab, tab))
            if tab not in ("info", "app"):
                assert first.get_attribute("class") == "actions", tab
            pg.screenshot(path=str(out), full_page=True)
            w, h = _png_size(out)
            assert w == viewport["width"] and h >= viewport["height"] - 1, (out, w, h)
        pg.close()
    names = sorted("%s-%s.png" % (t, s) for t in TABS for s in ("phone", "desktop"))
    for folder in (SCREENS, DOC_SCREENS):
        assert sorted(p.name for p in folder.glob("*.png")) == names, folder
    for name in names:  # the committed shots are of this page's tabs at these sizes
        viewport = PHONE if name.endswith("-phone.png") else DESKTOP
        assert _png_size(DOC_SCREENS / name)[0] == viewport["width"], name


def test_save_and_restart_saves_then_exits(page, board):
    # an edit left unsaved on the Settings tab is saved by "Save and restart"
    _tab(page, "settings")
    page.wait_for_function("document.getElementById('set-server').value !== ''")
    page.fill("#set-interval", "900")
    _tab(page, "exit")
    assert "Saved settings." in _act(page, "#exit-btn", "Config mode closed")
    assert board.saved_settings()["interval"] == 900
    assert page.dialogs == []
    result = board.wait_exit(timeout=10)
    # joined to no network (access point only): nothing to announce, as IAS
    assert result == {"reason": "close", "announced": []}, board.output
