# Trust continuity on the MicroPython unix port: signed anchor bundles (anchorset.py; built by
# tools/anchorbundle.py on CPython into a temp folder), pending/confirm (anchortx.py), the
# recovery ladder with a fake fetch and a fake clock and refresh thresholds (anchors.py),
# update-key rotation (keyrotation.py).
import binascii
import json
import os
import sys

from ias import (
    anchors,
    anchorset,
    anchortx,
    certstore,
    fsutil,
    keyrotation,
    reason,
    transport,
    trust,
)
from ias import state as state_mod
from ias.reason import ReasonError

DAY = 86400
_FX = {}


def fixtures():
    """The folder of keys, anchors and bundles for this run (made once by CPython)."""
    if _FX:
        return _FX
    tmp = os.getenv("TMPDIR") or "/tmp"
    folder = "%s/ias-anchors-%s" % (tmp, binascii.hexlify(os.urandom(4)).decode())
    exe = sys.executable.rsplit("/", 1)[0] + "/python"
    if not fsutil.exists(exe):
        exe = "python3"
    script = os.getcwd() + "/../test_anchorbundle.py"
    rc = os.system("%s %s --fixtures %s" % (exe, script, folder))
    assert rc == 0, "fixture generation failed (%r)" % rc
    with open(folder + "/fixtures.json") as f:
        _FX.update(json.load(f))
    return _FX


def fx(path):
    return fsutil.read_bytes(fixtures()["dir"] + "/" + path)


def bundle(name):
    return fx(name + "/anchors.json"), fx(name + "/anchors.json.sig")


_DEV = [0]


class Board:
    """The clock is all the anchors module asks of a board."""

    def __init__(self, t, synced=True):
        self.t = t
        self.clock_synced = synced

    def time(self):
        return self.t


class Device:
    def __init__(self, root, now, settings=None):
        self.board = Board(now)
        self.settings = settings or {"server": "https://ias.example", "recovery": []}
        self.state = state_mod.State(root + "/state.json")
        self.store = certstore.CertStore(root + "/cert")
        self.keys_dir = root + "/keys"


def new_device(names=("old1", "old2"), keys=("a",), settings=None):
    """A fresh device folder: anchors `names` (the first as iasRootCa.cer), update keys."""
    fixtures()
    _DEV[0] += 1
    root = "%s/dev%d" % (fixtures()["dir"], _DEV[0])
    fsutil.makedirs(root + "/cert")
    fsutil.makedirs(root + "/keys")
    for i, n in enumerate(names):
        fname = "iasRootCa.cer" if i == 0 else n + ".cer"
        fsutil.write_atomic(root + "/cert/" + fname, fx(n + ".pem"))
    for k in keys:
        fsutil.write_atomic(root + "/keys/%s.pub" % k, fx(k + ".pub"))
    dev = Device(root, fixtures()["now"], settings)
    dev.state.set("anchors_version", 1)
    return dev


def snapshot(store):
    """{name: sha256} of the store: what 'unchanged' is judged by."""
    return dict((n, store.load(n).sha256) for n in store.names())


def sha(name):
    return certstore.parse_anchor(fx(name + ".pem")).sha256


def shas(store):
    return sorted(snapshot(store).values())


class Fetch:
    """A fake fetch(url, limit): answers from a dict (bytes or an exception), logs every call."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, url, limit):
        self.calls.append(url)
        a = self.answers.get(url)
        if a is None:
            raise ReasonError("http_404", url)
        if isinstance(a, Exception):
            raise a
        assert len(a) <= limit
        return a


def serve(base, name):
    raw, sig = bundle(name)
    return {base + "anchors.json": raw, base + "anchors.json.sig": sig}


HTTPS = "https://ias.example/ota/anchors/"
HTTP = "http://ias.example/ota/anchors/"


def keys_of(dev):
    return trust.load_keys(dev.keys_dir)


# -- verify_bundle --------------------------------------------------------------------------------
def test_accepts_valid_bundle():
    dev = new_device()
    raw, sig = bundle("good2")
    b = anchorset.verify_bundle(raw, sig, keys_of(dev), 1, fixtures()["now"], "ias.example")
    assert b["version"] == 2
    assert [c.sha256 for c in b["certs"]] == [sha("old1"), sha("new1"), sha("new2")]
    assert b["hosts"] == ["ias.example"]
    assert b["expires"] > fixtures()["now"] + 300 * DAY
    # a signature sent as base64 text is the same signature
    b64 = binascii.b2a_base64(sig).strip()
    assert anchorset.verify_bundle(raw, b64, keys_of(dev), 1, fixtures()["now"])["version"] == 2


def _refused(name, reason, installed=1, now=0, host="ias.example"):
    dev = new_device()
    raw, sig = bundle(name)
    now = fixtures()["now"] if now == 0 else now
    try:
        anchorset.verify_bundle(raw, sig, keys_of(dev), installed, now, host)
    except ReasonError as e:
        assert e.reason == reason, "%s: %s, wanted %s" % (name, e, reason)
        return
    raise AssertionError("%s accepted" % name)


def test_refusals_by_reason():
    _refused("otherkey", "bad_signature")
    _refused("good2", "not_newer", installed=2)
    _refused("good2", "not_newer", installed=5)
    _refused("old1", "not_newer")
    _refused("expired", "expired")
    _refused("garbage", "malformed")
    _refused("garbage_unsigned", "bad_signature")
    _refused("notca", "not_ca")
    _refused("alldead", "no_anchors")
    _refused("wronghost", "wrong_host")
    _refused("good2", "clock_unset", now=None)
    # a bundle valid today is expired a year and a day from now
    _refused("good2", "expired", now=fixtures()["now"] + 366 * DAY)


def test_tampered_byte_is_bad_signature():
    dev = new_device()
    raw, sig = bundle("good2")
    evil = bytearray(raw)
    evil[raw.find(b'"version":2') + 10] = ord("9")
    try:
        anchorset.verify_bundle(bytes(evil), sig, keys_of(dev), 1, fixtures()["now"])
    except ReasonError as e:
        assert e.reason == "bad_signature"
    else:
        raise AssertionError("tampered bundle accepted")


def test_clock_unset_and_sane_time():
    dev = new_device()
    assert anchors.sane_time(dev.board, dev.state) == fixtures()["now"]
    dev.board.clock_synced = False
    assert anchors.sane_time(dev.board, dev.state) is None
    dev.board.clock_synced = True
    dev.board.t = 946684800 + 100  # an ESP32 RTC after power-on, "synced" by a bad answer
    assert anchors.sane_time(dev.board, dev.state) is None
    dev.board.t = fixtures()["now"]
    dev.state.set("time_floor", fixtures()["now"] + DAY)  # clock went backwards
    assert anchors.sane_time(dev.board, dev.state) is None
    dev.state.drop("time_floor")
    dev.board.clock_synced = False
    before = snapshot(dev.store)
    f = Fetch(serve(HTTP, "good2"))
    out = anchors.recover(dev, f, force=True, keys_dir=dev.keys_dir)
    assert out["outcome"] == "skipped" and f.calls == []
    assert snapshot(dev.store) == before


def test_refused_bundles_leave_the_store_unchanged():
    for name in ("otherkey", "old1", "expired", "garbage", "garbage_unsigned", "notca"):
        dev = new_device()
        before = snapshot(dev.store)
        f = Fetch(serve(HTTPS, name))
        out = anchors.recover(dev, f, force=True, keys_dir=dev.keys_dir)
        assert out["outcome"] in ("failed", "nothing_new"), (name, out)
        assert snapshot(dev.store) == before, name
        assert dev.state.get("anchors_pending") is None
        assert dev.state.get("anchors_version") == 1
        assert dev.state.get("keys_doc") is None


# -- pending / confirm --------------------------------------------------------------------------
def _install(dev, name="good2"):
    raw, sig = bundle(name)
    now = fixtures()["now"]
    installed = anchorset.installed_version(dev.state)
    b = anchorset.verify_bundle(raw, sig, keys_of(dev), installed, now)
    return anchortx.install_bundle(b, dev.store, dev.state, now)


def test_pending_then_confirm():
    dev = new_device()
    now = fixtures()["now"]
    _install(dev)
    p = dev.state.get("anchors_pending")
    assert p["version"] == 2 and dev.state.get("anchors_version") == 1
    assert "iasRootCa.cer" in p["new"]  # old1 is in the bundle: it keeps its IAS name
    # both sets are trusted until a verified call home
    assert shas(dev.store) == sorted([sha("old1"), sha("old2"), sha("new1"), sha("new2")])
    assert dev.store.context() is not None and dev.store.loaded == 4
    assert anchorset.installed_version(dev.state) == 2
    assert anchortx.confirm(dev.state, dev.store, now)
    assert shas(dev.store) == sorted([sha("old1"), sha("new1"), sha("new2")])
    assert dev.state.get("anchors_version") == 2 and dev.state.get("anchors_pending") is None
    assert fsutil.read_bytes(dev.store.root + "/bundle.json") == bundle("good2")[0]
    assert fsutil.read_bytes(dev.store.root + "/bundle.sig") == bundle("good2")[1]
    assert not fsutil.exists(dev.store.root + "/bundle.pending.json")
    assert not anchortx.confirm(dev.state, dev.store, now)  # nothing pending any more
    # the state survives a reload (what call home reports as x-IAS-ANCHORS)
    assert state_mod.State(dev.state.path).get("anchors_version") == 2


def test_pending_set_waits_for_a_call_home_its_own_anchors_verified():
    # design §1 rule 8: failed handshakes (a man in the middle?) and call homes the old anchors
    # verified leave the set pending, never reverted or rejected; the new set confirms it
    dev = new_device()
    now = fixtures()["now"]
    _install(dev)
    during = snapshot(dev.store)
    for _ in range(6):  # more than the 3 failures that used to revert it
        assert anchortx.after_call_home(dev.state, dev.store, now, False) == "pending"
    assert anchortx.after_call_home(dev.state, dev.store, now, True, by_new=False) == "pending"
    assert snapshot(dev.store) == during and dev.state.get("anchors_rejected") is None
    assert dev.state.get("anchors_pending")["version"] == 2
    assert anchortx.after_call_home(dev.state, dev.store, now, True, by_new=True) == "confirmed"
    assert dev.state.get("anchors_version") == 2
    assert anchortx.after_call_home(dev.state, dev.store, now, True) is None


def test_newer_bundle_while_pending_replaces_the_pending_set():
    dev = new_device()
    now = fixtures()["now"]
    _install(dev, "good2")
    _install(dev, "good3")  # v3 = new2 only; the old set stays, v2's extras go
    p = dev.state.get("anchors_pending")
    assert p["version"] == 3
    assert shas(dev.store) == sorted([sha("old1"), sha("old2"), sha("new2")])
    anchortx.confirm(dev.state, dev.store, now)
    assert shas(dev.store) == [sha("new2")]
    assert dev.state.get("anchors_version") == 3


def test_resume_completes_a_union_cut_before_the_store_write():
    dev = new_device()
    now = fixtures()["now"]
    raw, sig = bundle("good2")
    b = anchorset.verify_bundle(raw, sig, keys_of(dev), 1, now)
    # as if power went after the intent was written but before the anchors were
    fsutil.write_atomic(dev.store.root + "/bundle.pending.json", raw)
    fsutil.write_atomic(dev.store.root + "/bundle.pending.sig", sig)
    names = anchortx.names_for(b["certs"], dev.store)
    dev.state.set(
        "anchors_pending",
        {"version": 2, "old": dev.store.names(), "new": names, "since": now, "fails": 0},
    )
    assert not anchortx.confirm(dev.state, dev.store, now)  # not tried yet: completes instead
    assert len(dev.store.names()) == 4
    assert anchortx.confirm(dev.state, dev.store, now)
    assert shas(dev.store) == sorted([sha("old1"), sha("new1"), sha("new2")])


# -- the ladder -----------------------------------------------------------------------------------
def test_locations():
    assert anchors.recovery_locations({"server": "https://ias.example", "recovery": []}) == [
        HTTPS,
        HTTP,
    ]
    assert anchors.recovery_locations({"server": "https://h:8443/x", "recovery": []}) == [
        "https://h:8443/ota/anchors/",
        "http://h/ota/anchors/",
    ]
    assert anchors.recovery_locations({"server": "http://h:8080", "recovery": []}) == [
        "http://h:8080/ota/anchors/"
    ]
    rec = ["https://mirror.example/a", "http://lan.example/b/"]
    assert anchors.recovery_locations({"server": "https://ias.example", "recovery": rec}) == [
        "https://mirror.example/a/",
        "http://lan.example/b/",
    ]


def test_ladder_falls_to_plain_http_and_installs():

    dev = new_device()
    answers = serve(HTTP, "good2")
    answers[HTTPS + "anchors.json"] = ReasonError("untrusted", "chain")
    f = Fetch(answers)
    out = anchors.recover(dev, f, keys_dir=dev.keys_dir)
    assert out["outcome"] == "installed" and out["version"] == 2
    assert f.calls == [HTTPS + "anchors.json", HTTP + "anchors.json", HTTP + "anchors.json.sig"]
    assert dev.state.get("anchors_pending")["version"] == 2
    assert out["report"] == ["1 %s untrusted" % HTTPS, "2 %s installed v2" % HTTP]
    head = anchors.report_header(dev.state)
    assert "untrusted" in head and "installed v2" in head, head
    anchors.report_sent(dev.state)
    assert anchors.report_header(dev.state) is None
    assert dev.state.get("anchors_ladder_at") == fixtures()["now"]


def test_plain_http_only_with_a_valid_signature():

    dev = new_device()
    before = snapshot(dev.store)
    answers = serve(HTTP, "otherkey")
    answers[HTTPS + "anchors.json"] = ReasonError("untrusted")
    out = anchors.recover(dev, Fetch(answers), keys_dir=dev.keys_dir)
    assert out["outcome"] == "failed"
    assert out["report"][-1] == "2 %s bad_signature" % HTTP
    assert snapshot(dev.store) == before


def test_rate_limit_and_forced_walks():
    dev = new_device()
    f = Fetch({})  # nothing anywhere
    assert anchors.recover(dev, f, keys_dir=dev.keys_dir)["outcome"] == "failed"
    assert len(f.calls) == 2
    dev.board.t += 5 * 3600
    out = anchors.recover(dev, f, keys_dir=dev.keys_dir)
    assert out["outcome"] == "rate_limited" and len(f.calls) == 2
    out = anchors.recover(dev, f, force=True, keys_dir=dev.keys_dir)
    assert out["outcome"] == "failed" and len(f.calls) == 4  # forced: the whole ladder
    dev.board.t += 5 * 3600  # 5 h after the forced walk: still limited
    assert anchors.recover(dev, f, keys_dir=dev.keys_dir)["outcome"] == "rate_limited"
    dev.board.t += 3600 + 1
    assert anchors.recover(dev, f, keys_dir=dev.keys_dir)["outcome"] == "failed"
    assert len(f.calls) == 6
    assert len(dev.state.get("anchors_report")) <= anchors.MAX_REPORT


def test_scheduled_stops_at_first_install_forced_takes_the_highest():
    answers = serve(HTTPS, "good2")
    answers.update(serve(HTTP, "good3"))
    dev = new_device()
    f = Fetch(answers)
    out = anchors.recover(dev, f, keys_dir=dev.keys_dir)
    assert out["version"] == 2 and len(f.calls) == 2
    dev = new_device()
    f = Fetch(answers)
    out = anchors.recover(dev, f, force=True, keys_dir=dev.keys_dir)
    assert out["version"] == 3 and len(f.calls) == 4
    assert dev.state.get("anchors_pending")["version"] == 3
    assert "old2" not in "".join(out["report"])
    anchortx.confirm(dev.state, dev.store, dev.board.t)
    assert shas(dev.store) == [sha("new2")]


def test_recovery_urls_from_settings_in_order():
    rec = ["https://m1.example/a/", "http://m2.example/b/"]
    dev = new_device(settings={"server": "https://ias.example", "recovery": rec})
    answers = serve(rec[1], "good2")
    f = Fetch(answers)
    out = anchors.recover(dev, f, keys_dir=dev.keys_dir)
    assert out["outcome"] == "installed"
    assert f.calls[0] == rec[0] + "anchors.json" and f.calls[1] == rec[1] + "anchors.json"


def test_wrong_host_bundle_refused_by_ladder():
    dev = new_device()
    before = snapshot(dev.store)
    out = anchors.recover(dev, Fetch(serve(HTTPS, "wronghost")), keys_dir=dev.keys_dir)
    assert out["outcome"] == "failed" and "wrong_host" in out["report"][0]
    assert snapshot(dev.store) == before


# -- refresh --------------------------------------------------------------------------------------
def test_refresh_thresholds_fire_once_each():
    dev = new_device(names=("soon", "new1"))
    expiry = dev.store.earliest_expiry(fixtures()["now"])
    assert expiry == certstore.parse_anchor(fx("soon.pem")).not_after
    f = Fetch({})
    fired = []
    # walk the clock from 199 days before expiry to 5 days before, a day at a time
    for days_before in range(199, 4, -1):
        dev.board.t = expiry - days_before * DAY - 3600
        out = anchors.refresh(dev, f, keys_dir=dev.keys_dir)
        if out is not None:
            fired.append(days_before)
    assert fired == [180, 60, 30], fired
    assert len(f.calls) == 3 * 2  # each refresh walked the ladder (two rungs)


def test_refresh_long_offline_fires_once_and_resets_with_new_expiry():
    dev = new_device(names=("soon", "new1"))
    now = fixtures()["now"]
    expiry = dev.store.earliest_expiry(now)
    t = expiry - 20 * DAY
    assert anchors.refresh_due(dev.state, dev.store, t) == 30
    anchors.mark_refreshed(dev.state, dev.store, t, 30)
    assert anchors.refresh_due(dev.state, dev.store, t) is None
    assert anchors.refresh_due(dev.state, dev.store, t + 10 * DAY) is None
    assert anchors.refresh_due(dev.state, dev.store, None) is None
    # a refresh that installs a later anchor set: the countdown starts again
    dev = new_device(names=("soon", "new1"))
    dev.board.t = expiry - 59 * DAY
    assert anchors.refresh_due(dev.state, dev.store, dev.board.t) == 60
    out = anchors.refresh(dev, Fetch(serve(HTTPS, "good2")), keys_dir=dev.keys_dir)
    assert out["outcome"] == "installed"
    anchortx.confirm(dev.state, dev.store, dev.board.t)
    new_exp = dev.store.earliest_expiry(dev.board.t)
    assert new_exp > expiry
    assert anchors.refresh_due(dev.state, dev.store, new_exp - 100 * DAY) == 180


def test_dates_and_times():
    assert reason.iso_date(0) == "1970-01-01"
    assert reason.iso_date(951782400) == "2000-02-29"
    assert reason.iso_date(4107542399) == "2100-02-28"
    assert anchorset.parse_time("2000-02-29") == 951782400
    assert anchorset.parse_time("2030-03-17T17:46:40Z") == 1900000000
    assert anchorset.parse_time(5) == 5
    for bad in ("2030-13-01", "2030/01/01", "yesterday", 1.5, None, True):
        try:
            anchorset.parse_time(bad)
        except ReasonError as e:
            assert e.reason == "malformed"
        else:
            raise AssertionError("%r parsed" % (bad,))


# -- update-key rotation --------------------------------------------------------------------------
def test_key_rotation_accepted_only_from_current_key():
    dev = new_device()
    now = fixtures()["now"]
    doc, sig = fx("rot_b/keys.json"), fx("rot_b/keys.json.sig")
    try:
        keyrotation.rotate_key(doc, sig, keys_of(dev), dev.state, now, dev.keys_dir)
    except ReasonError as e:
        assert e.reason == "bad_signature"
    else:
        raise AssertionError("keys.json signed by a stranger accepted")
    assert sorted(os.listdir(dev.keys_dir)) == ["a.pub"]
    # a bundle signed by key c is refused before the rotation ...
    raw, bsig = bundle("byc4")
    try:
        anchorset.verify_bundle(raw, bsig, keys_of(dev), 1, now)
        raise AssertionError("bundle by an unknown key accepted")
    except ReasonError as e:
        assert e.reason == "bad_signature"
    doc, sig = fx("rot_a/keys.json"), fx("rot_a/keys.json.sig")
    names = keyrotation.rotate_key(doc, sig, keys_of(dev), dev.state, now, dev.keys_dir)
    assert names == ["k1-0.pub"]
    assert sorted(os.listdir(dev.keys_dir)) == ["a.pub", "k1-0.pub"]
    # ... and accepted after it; the old key still works during the transition
    assert anchorset.verify_bundle(raw, bsig, keys_of(dev), 1, now)["version"] == 4
    assert anchorset.verify_bundle(*bundle("good2"), keys_of(dev), 1, now)["version"] == 2
    try:
        keyrotation.rotate_key(doc, sig, keys_of(dev), dev.state, now, dev.keys_dir)
        raise AssertionError("replayed keys.json accepted")
    except ReasonError as e:
        assert e.reason == "not_newer"
    # the transition window ends by authenticated time (the time floor): the old key is
    # retired, never the new one
    assert keyrotation.retire_keys(dev.state, dev.keys_dir) == []
    dev.state.set("time_floor", now + 29 * DAY)
    assert keyrotation.retire_keys(dev.state, dev.keys_dir) == []
    dev.state.set("time_floor", now + 31 * DAY)
    assert keyrotation.retire_keys(dev.state, dev.keys_dir) == ["a.pub"]
    assert sorted(os.listdir(dev.keys_dir)) == ["k1-0.pub"]
    try:
        anchorset.verify_bundle(*bundle("good2"), keys_of(dev), 1, now + 31 * DAY)
        raise AssertionError("retired key still honoured")
    except ReasonError as e:
        assert e.reason == "bad_signature"


def test_key_retirement_ignores_a_clock_far_ahead():
    # Design §1 rule 7: an NTP answer ten years ahead while keys.json arrives (rotate_key's
    # `now` is the board's clock) retires nothing; the floor, still at today, decides.
    dev = new_device()
    now = fixtures()["now"]
    dev.state.set("time_floor", now - DAY)
    doc, sig = fx("rot_a/keys.json"), fx("rot_a/keys.json.sig")
    ahead = now + 10 * 365 * DAY
    assert keyrotation.rotate_key(doc, sig, keys_of(dev), dev.state, ahead, dev.keys_dir) == [
        "k1-0.pub"
    ]
    assert sorted(os.listdir(dev.keys_dir)) == ["a.pub", "k1-0.pub"]
    assert keyrotation.retire_keys(dev.state, dev.keys_dir) == []
    # the old key still verifies what it signed during the transition
    assert anchorset.verify_bundle(*bundle("good2"), keys_of(dev), 1, now)["version"] == 2


def test_ladder_picks_up_a_rotated_key():
    dev = new_device()
    answers = serve(HTTPS, "byc4")
    answers[HTTPS + "keys.json"] = fx("rot_a/keys.json")
    answers[HTTPS + "keys.json.sig"] = fx("rot_a/keys.json.sig")
    out = anchors.recover(dev, Fetch(answers), keys_dir=dev.keys_dir)
    assert out["outcome"] == "installed" and out["version"] == 4
    assert dev.state.get("keys_doc")["version"] == 1
    dev = new_device()  # the same keys.json signed by a stranger opens nothing
    answers[HTTPS + "keys.json"] = fx("rot_b/keys.json")
    answers[HTTPS + "keys.json.sig"] = fx("rot_b/keys.json.sig")
    out = anchors.recover(dev, Fetch(answers), keys_dir=dev.keys_dir)
    assert out["outcome"] == "failed" and dev.state.get("keys_doc") is None


def test_look_for_keys_walks_the_locations_and_is_rate_limited():
    dev = new_device()
    places = [HTTPS, HTTP]
    answers = {HTTP + "keys.json": fx("rot_a/keys.json")}
    answers[HTTP + "keys.json.sig"] = fx("rot_a/keys.json.sig")
    f = Fetch({})  # nothing anywhere: looked for, none found, the look is recorded
    assert not keyrotation.look_for_keys(dev, f, places, keys_dir=dev.keys_dir)
    assert f.calls == [HTTPS + "keys.json", HTTP + "keys.json"]
    f = Fetch(answers)
    assert not keyrotation.look_for_keys(dev, f, places, keys_dir=dev.keys_dir)
    assert f.calls == []  # within RATE_S of the last look
    assert keyrotation.look_for_keys(dev, f, places, force=True, keys_dir=dev.keys_dir)
    assert f.calls[-2:] == [HTTP + "keys.json", HTTP + "keys.json.sig"]
    assert sorted(os.listdir(dev.keys_dir)) == ["a.pub", "k1-0.pub"]
    dev.board.clock_synced = False  # no sane time: never looked for
    f = Fetch(answers)
    assert not keyrotation.look_for_keys(dev, f, places, force=True, keys_dir=dev.keys_dir)
    assert f.calls == []


# -- the ladder's fetch: the device's transport ---------------------------------------------------
class Stream:
    def __init__(self, reply):
        self.reply = reply
        self.pos = 0
        self.sent = bytearray()
        self.closed = False

    def write(self, data):
        self.sent += data
        return len(data)

    def readinto(self, buf, n=None):
        n = min(len(buf), len(self.reply) - self.pos, 700)  # short reads, as sockets give
        buf[:n] = self.reply[self.pos : self.pos + n]
        self.pos += n
        return n

    def close(self):
        self.closed = True


class Clock:
    def ticks_ms(self):
        return 0


def test_ladder_fetch_is_the_transport_bounded_and_plain():
    raw, sig = bundle("good2")
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(raw) + raw
    made = []

    def connect(scheme, host, port, timeout_ms):
        made.append((host, port, scheme))
        made.append(Stream(reply))
        return made[-1]

    fetch = transport.Transport(Clock(), connect=connect).fetch
    body = fetch("http://ias.example/ota/anchors/anchors.json", anchorset.MAX_BUNDLE)
    assert bytes(body) == raw and made[0] == ("ias.example", 80, "http")
    assert made[1].closed
    assert made[1].sent.startswith(b"GET /ota/anchors/anchors.json HTTP/1.1\r\nHost: ias.example")
    try:
        fetch("https://ias.example:8443/ota/anchors/anchors.json", 1000)
        raise AssertionError("oversized body read")
    except ReasonError as e:
        assert e.reason == "too_large"
    assert made[2] == ("ias.example", 8443, "https") and made[3].pos <= 1024  # head only
    assert b"Host: ias.example:8443" in made[3].sent
    reply = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    try:
        fetch("http://ias.example/x", 1000)
        raise AssertionError("404 accepted")
    except ReasonError as e:
        assert e.reason == "http_404"  # the word the ladder's report carries


def test_resume_without_time_only_recovers_the_store():
    dev = new_device()
    now = fixtures()["now"]
    _install(dev)
    names = dev.store.names()
    assert not anchortx.resume(dev.state, dev.store, None)
    assert dev.store.names() == names and dev.state.get("anchors_pending")["version"] == 2
    assert not anchortx.resume(dev.state, dev.store, now)  # union already complete
    assert anchortx.confirm(dev.state, dev.store, now)
