"""The config page in a real browser (Debian's chromium, headless, driven by Playwright) against
config mode served by the MicroPython unix port: certificate list with real generated anchors,
"Get IAS root cert", uploads (a CA and a refused server certificate), delete, a Wi-Fi network,
an app field, markup in SSIDs and certificate names shown as text, and Exit. Screenshots go to
test-artifacts/ (phone and desktop viewports).
"""

import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from webfixture import ConfigServer

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


@pytest.fixture
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
