"""Config mode's "Get IAS root cert" as a user meets it: the server is about to move to a new
root; the user holds the mode button 7 s at power-on, opens the config page and presses "Get IAS
root cert". The virtual ESP32, booted from its flash into config mode by its own boot.py, joins
its saved Wi-Fi network for the clock, fetches the anchor set the update key signed from
`ias serve` through its transport (verified TLS), installs it; the server then moves to the new
root, and after "Exit" the device's next call home verifies against it with no recovery ladder."""

import json
import socket
import threading
import time
import urllib.request

from tests import configclient
from tests.scenario import make_chain, make_world, staged_firmware  # noqa: F401 (fixtures)
from tests.test_continuity_e2e import anchor_name
from tools import sim


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port, path, data=None, timeout=60):
    """GET (or POST `data`) on the config page, waiting for config mode to listen."""
    end = time.monotonic() + timeout
    while True:
        try:
            req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data)
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def test_get_ias_root_cert_from_config_mode(make_world):  # noqa: F811
    a, b = make_chain("A"), make_chain("B")
    port = _free_port()
    world = make_world(trust=[a.root], serve=a, recovery="https", config_port=port)
    world.sign_anchors(2, [a.root, b.root])  # the update key authorises root B
    args = sim.args_for(
        "boot", world.board, cycles=2, max_boots=3, hold_button=7, boot_timeout=120, quiet=True
    )
    booted = threading.Thread(target=sim.boot, args=(args,))
    booted.start()
    try:
        status, body = _request(port, "/csr")  # the certificate page's list: root A only
        assert status == 200 and [c["n"] for c in json.loads(body)] == ["/cert/iasRootCa.cer"]
        mark = world.mark()
        # first the preview: fetched and verified, shown, nothing changed yet
        status, body = configclient.request(port, "/anchors/preview", b"")
        res = json.loads(body)
        assert res["ok"] and res["version"] == 2, res
        assert len(res["add"]) == 1 and "Root B" in res["add"][0]["subject"], res
        assert [c["name"] for c in res["keep"]] == ["iasRootCa.cer"] and res["remove"] == []
        status, body = _request(port, "/csr")
        assert [c["n"] for c in json.loads(body)] == ["/cert/iasRootCa.cer"]
        fetched = world.requests(mark, "/ota/anchors/anchors.json")
        assert fetched and fetched[0]["tls"]  # over TLS to the server (the ladder's https rung)
        # then the confirm applies exactly the set previewed
        status, body = configclient.request(port, "/anchors/fetch", b"v=2")
        res = json.loads(body)
        assert res == {"ok": True, "message": "installed anchor set v2", "version": 2}, res
        status, body = _request(port, "/csr")
        names = sorted(c["n"] for c in json.loads(body))
        assert names == sorted(["/cert/iasRootCa.cer", "/cert/" + anchor_name(b.root)]), names
        world.serve(b)  # the server moves to root B
        try:
            configclient.request(port, "/close", b"", timeout=5, wait=5)
        except OSError:
            pass  # IAS's /close sends no reply
        booted.join(180)
    finally:
        if booted.is_alive():
            booted.join(180)
    log = world.console()
    after = log[log.index("config mode ends (close)") :]
    assert "calling home" in after and "failed:" not in after, after[-3000:]
    assert world.requests(mark, "/ota/updates")[-1]["tls"]  # the call home after, over B
    assert "recovery ladder" not in after and "untrusted" not in after, after[-3000:]
    state = world.state()
    assert state["anchors_version"] == 2 and "anchors_pending" not in state, state
