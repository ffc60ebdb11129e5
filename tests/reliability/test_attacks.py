"""Attacks on a virtual ESP32 running the real firmware: a server certificate from a CA the
device does not trust, a valid certificate for another host, a downgrade to plain HTTP (unsigned
content refused even with allow_unsigned; signed content fine), a replayed older signed bundle,
a bundle signed by another key, another signed document (an anchor set, a channel document)
offered as a bundle's manifest; and, on CPython, a replayed or foreign-signed anchor bundle.
Every refusal leaves the device's persistent files byte-identical and names its reason."""

import io
import json
import sys
import tarfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.reliability import rig
from tests.reliability.ledger import record
from tools import anchorbundle, bundle, keys, pkg_path, pki
from tools import publish as publish_tool
from tools.server import UpdateServer

sys.path.insert(0, pkg_path())
from ias import anchorset, trust  # noqa: E402
from ias.reason import ReasonError  # noqa: E402

CAT = "attacks"


class AttackLab:
    def __init__(self, work):
        self.work = Path(work)
        self.key = keys.new_key(bits=2048)
        self.other_key = keys.new_key(bits=2048)
        pub = self.work / "update.pub"
        pub.write_bytes(keys.public_pem(self.key))
        self.root = pki.make_ca("Attack Root", org="Lab")
        self.inter = pki.make_ca("Attack Intermediate", org="Lab", issuer=self.root)
        root_pem = self.work / "root.pem"
        root_pem.write_bytes(self.root.pem)
        self.artifacts = self.work / "artifacts"
        rig.publish(self.artifacts, self.work, self.key, "1.1", 1)
        self.servers = {}
        good = self.server("good", pki.make_leaf(self.inter), [self.inter])
        self.board = rig.init_board(
            self.work / "board", "https://127.0.0.1:%d" % good.port, [root_pem], pub
        )
        self.board.snapshot()

    def server(self, name, leaf, chain):
        srv = UpdateServer(artifacts=self.artifacts, plain_port=0)
        srv.use_chain(leaf, chain)
        srv.start()
        self.servers[name] = srv
        return srv

    def stop(self):
        for srv in self.servers.values():
            srv.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = AttackLab(tmp_path_factory.mktemp("attacks"))
    yield lab
    lab.stop()


def attempt(lab, case, url, expect_outcome, expect_reason=None, volatile=(), **settings):
    """Point the board at `url` (and other settings), call home once, check and record."""
    board = lab.board
    board.restore()
    board.settings(lab.work, server=url, **settings)
    before = board.persistent()
    code, res, wall, out = board.callhome()
    after = board.persistent()
    for key in volatile:  # what the device keeps to report the incident next time
        after[1].pop(key, None)
    outcome, reason = (res or {}).get("outcome"), (res or {}).get("reason")
    refused = expect_outcome == "error"
    ok = outcome == expect_outcome and (expect_reason is None or reason == expect_reason)
    ok = ok and (after == before if refused else True)
    record(CAT, case, ok, outcome=outcome, reason=reason, seconds=round(wall, 2))
    assert res is not None, out[-2000:]
    assert outcome == expect_outcome, (res, out[-1500:])
    if expect_reason is not None:
        assert reason == expect_reason, res
    if refused:
        assert after == before, "a refused attack changed the device"
    return res


def publish(lab, key, version, counter):
    rig.publish(lab.artifacts, lab.work, key, version, counter)


def test_untrusted_ca(lab):
    rogue = pki.make_ca("Rogue Root", org="Elsewhere")
    srv = lab.server("rogue", pki.make_leaf(rogue), [])
    publish(lab, lab.key, "1.1", 1)
    url = "https://127.0.0.1:%d" % srv.port
    # the recovery ladder runs (and finds nothing signed): it only keeps its report
    report = ("anchors_ladder_at", "anchors_report")
    attempt(lab, "server certificate from an untrusted CA", url, "error", "untrusted", report)


def test_valid_certificate_for_another_host(lab):
    leaf = pki.make_leaf(lab.inter, hosts=("updates.example.com",))
    srv = lab.server("otherhost", leaf, [lab.inter])
    publish(lab, lab.key, "1.1", 1)
    url = "https://127.0.0.1:%d" % srv.port
    attempt(lab, "valid certificate for another host", url, "error", "name_mismatch")


def test_plain_http_refuses_unsigned_even_when_allowed(lab):
    srv = lab.servers["good"]
    publish(lab, None, "1.1", 1)
    url = "http://127.0.0.1:%d" % srv.plain_port
    attempt(
        lab, "downgrade to http: unsigned bundle", url, "error", "unsigned", allow_unsigned=True
    )


def test_verified_tls_takes_unsigned_only_when_allowed(lab):
    # the control for the case above: the same unsigned bundle over verified TLS is taken
    srv = lab.servers["good"]
    publish(lab, None, "1.1", 1)
    url = "https://127.0.0.1:%d" % srv.port
    attempt(lab, "unsigned bundle over https, allow_unsigned off", url, "error", "unsigned")
    attempt(
        lab, "unsigned bundle over https, allow_unsigned on", url, "updated", allow_unsigned=True
    )


def test_plain_http_takes_signed(lab):
    srv = lab.servers["good"]
    publish(lab, lab.key, "1.1", 1)
    url = "http://127.0.0.1:%d" % srv.plain_port
    attempt(lab, "signed bundle over plain http", url, "updated")


def test_replay_of_older_signed_bundle(lab):
    srv = lab.servers["good"]
    board = lab.board
    board.restore()
    # the device committed counter 3 earlier (the floor trial.commit raises)
    st = board.json("/state.json") or {}
    st["counters"] = {"app": 3}
    board.put("/state.json", json.dumps(st).encode(), lab.work)
    publish(lab, lab.key, "1.0.9", 2)
    before = board.persistent()
    code, res, wall, out = board.callhome()
    after = board.persistent()
    ok = res and res["outcome"] == "error" and res["reason"] == "old_counter" and after == before
    record(
        CAT,
        "replay of an older signed bundle (counter 2 < floor 3)",
        ok,
        reason=res and res.get("reason"),
    )
    assert res is not None, out[-2000:]
    assert res["outcome"] == "error" and res["reason"] == "old_counter", res
    assert after == before
    assert srv.requests


def test_bundle_signed_by_another_key(lab):
    publish(lab, lab.other_key, "1.1", 1)
    url = "https://127.0.0.1:%d" % lab.servers["good"].port
    attempt(lab, "bundle signed by another key", url, "error", "bad_signature")


# -- typed signatures: a document the operator signed for another purpose, as a manifest ------
def _serve_as_manifest(lab, make_doc, version="1.1"):
    """The server's current artifact: a bundle of the app whose manifest.json and manifest.sig
    are make_doc(the app's true manifest) and the update key's signature of it."""
    src = rig.app_source(lab.work, version)
    files = bundle.collect(src)
    raw = make_doc(bundle.manifest_bytes(files, "IASBlink", version, 1))
    members = [("manifest.json", raw), ("manifest.sig", bundle.sign(lab.key, raw))]
    members += [(rel, path.read_bytes()) for rel, path in files]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    folder = lab.artifacts / "IASBlink"
    (folder / "typed.tar").write_bytes(out.getvalue())
    (folder / "current.json").write_text(
        json.dumps({"name": "IASBlink", "version": version, "file": "typed.tar"})
    )


def test_anchor_set_signature_offered_as_a_manifest(lab):
    def anchor_set(_manifest):
        return anchorbundle.bundle_bytes(2, [lab.root.pem.decode()], hosts=["127.0.0.1"])

    _serve_as_manifest(lab, anchor_set)
    url = "https://127.0.0.1:%d" % lab.servers["good"].port
    attempt(lab, "anchor set's signature offered as a bundle manifest", url, "error", "wrong_kind")


def test_channel_document_offered_as_a_manifest(lab):
    # A channel document that also carries every manifest field: without the kind in the
    # signed bytes the device would install it (tests/unix/test_typedsig.py holds the matrix).
    def channel_doc(manifest):
        chan = json.loads(publish_tool.channel_bytes("IASBlink", "1.1", 1, "b.tar", b"x"))
        return json.dumps(dict(json.loads(manifest), **chan)).encode()

    _serve_as_manifest(lab, channel_doc)
    url = "https://127.0.0.1:%d" % lab.servers["good"].port
    case = "channel document (also a whole manifest) offered as a bundle manifest"
    attempt(lab, case, url, "error", "wrong_kind")


def test_untyped_manifest_refused_until_re_signed(lab):
    # the migration (docs/trust-continuity.md, "Typed signatures"): a bundle signed by tools
    # from before kinds is refused and changes nothing; the same release re-signed installs
    def untyped(manifest):
        doc = json.loads(manifest)
        del doc["kind"]
        return json.dumps(doc).encode()

    _serve_as_manifest(lab, untyped)
    url = "https://127.0.0.1:%d" % lab.servers["good"].port
    attempt(lab, "bundle signed before typed signatures (no kind)", url, "error", "wrong_kind")
    publish(lab, lab.key, "1.1", 1)
    attempt(lab, "the same release re-signed with the kind", url, "updated")


# -- anchor bundles (the recovery ladder's input), on CPython ------------------------------------
def _anchor_bundle(key, version, now):
    raw = anchorbundle.bundle_bytes(
        version,
        [pki.make_ca("Anchor Root %d" % version).pem],
        expires=now + 86400 * 400,
        hosts=["127.0.0.1"],
    )
    sig = key.sign(raw, padding.PKCS1v15(), hashes.SHA256())
    return raw, sig


def test_anchor_bundle_replay_and_foreign_key():
    key, other = keys.new_key(bits=2048), keys.new_key(bits=2048)
    dev_keys = [trust.key_from_pem(keys.public_pem(key).decode(), "update")]
    now = int(time.time())
    raw, sig = _anchor_bundle(key, 3, now)
    assert anchorset.verify_bundle(raw, sig, dev_keys, 2, now, "127.0.0.1")["version"] == 3
    cases = [
        ("anchor bundle replay: same version", (raw, sig, dev_keys, 3), "not_newer"),
        ("anchor bundle replay: older version", (raw, sig, dev_keys, 5), "not_newer"),
        (
            "anchor bundle signed by another key",
            _anchor_bundle(other, 4, now) + (dev_keys, 2),
            "bad_signature",
        ),
        (
            "anchor bundle with a flipped byte",
            (raw[:-2] + b"x" + raw[-1:], sig, dev_keys, 2),
            "bad_signature",
        ),
        ("anchor bundle for another host", (raw, sig, dev_keys, 2), "wrong_host"),
    ]
    for name, (r, s, k, installed), reason in cases:
        host = "evil.example" if reason == "wrong_host" else "127.0.0.1"
        with pytest.raises(ReasonError) as err:
            anchorset.verify_bundle(r, s, k, installed, now, host)
        record(CAT, name, err.value.reason == reason, reason=err.value.reason)
        assert err.value.reason == reason, (name, err.value)


# -- config mode against other web pages (issue 17.5), the requests a browser would send --------
def test_config_mode_refuses_other_pages(tmp_path):
    from tests.webfixture import ConfigServer, files_of, raw_request

    root = pki.make_ca("IAS Root")
    attacker = pki.make_ca("Attacker Root").pem
    srv = ConfigServer(
        tmp_path / "dev",
        anchors=[("iasRootCa.cer", root.pem), ("other.cer", pki.make_ca("Other").pem)],
        fetch=("x.cer", root.pem),
        settings={"wifi": [{"ssid": "lab", "password": "labpass1"}]},
    )
    up = b"--b\r\nContent-Disposition: form-data; name=f; filename=iasRootCa.cer\r\n\r\n"
    up += attacker + b"\r\n--b--\r\n"
    multi = "multipart/form-data; boundary=b"
    wifi = (b"s=evil&p=evilpass1&i=1", "application/x-www-form-urlencoded")
    with srv:
        me = "127.0.0.1:%d" % srv.port
        cases = [
            ("config: root upload from a sandboxed frame (Origin null)", "POST", "/certupl",
             {"Host": me, "Origin": "null"}, up, multi, 403),
            ("config: root upload with a rebinding Host", "POST", "/certupl",
             {"Host": "evil.example", "Origin": "http://evil.example"}, up, multi, 403),
            ("config: root upload without Origin or token", "POST", "/certupl",
             {"Host": me}, up, multi, 403),
            ("config: Wi-Fi rewrite from a sandboxed frame (Origin null)", "POST", "/wsa",
             {"Host": me, "Origin": "null"}) + wifi + (403,),
            ("config: Wi-Fi rewrite from another origin", "POST", "/wsa",
             {"Host": me, "Origin": "http://127.0.0.1:1"}) + wifi + (403,),
            ("config: same origin with a guessed token", "POST", "/wsa",
             {"Host": me, "Origin": "http://" + me, "X-IAS-Token": "0" * 32}) + wifi + (403,),
            ("config: anchor delete by GET (an <img>)", "GET", "/csr?d=/cert/iasRootCa.cer",
             {"Host": me}, b"", "text/plain", 405),
            ("config: token read under a rebinding Host", "GET", "/token",
             {"Host": "evil.example"}, b"", "text/plain", 302),
        ]  # fmt: skip
        before = files_of(srv.dir)
        for name, method, path, hdrs, body, ctype, want in cases:
            st, _, reply = raw_request(
                srv.port, method, path, dict(hdrs, **{"Content-Type": ctype}), body
            )
            ok = st == want and b'"t"' not in reply and files_of(srv.dir) == before
            record(CAT, name, ok, status=st)
            assert ok, (name, st, reply)
