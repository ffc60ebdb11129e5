"""Issue 6 acceptance, end to end: trust continuity on a virtual ESP32 running the real firmware,
with real TLS on loopback (`ias serve` with generated CA chains) and a plain-HTTP recovery rung.

The device trusts one root. When the server's chain stops verifying (a new root, an expired
root, another CA family, a device shelved past its anchor's expiry), the device walks its
recovery ladder, installs the anchor bundle the update key signed (plain HTTP is fine: the
signature authorises it), calls home again in the same cycle and installs the next update; no
button. A new intermediate under the same root needs no recovery. A rotated update key reaches
the device through keys.json signed by the old key. Bundles signed by another key, older, expired,
for another host, or unsigned change nothing."""

import datetime as dt
import hashlib

import pytest

from tests.scenario import (  # noqa: F401 (fixtures)
    APP,
    assert_settings_kept,
    assert_unchanged,
    make_chain,
    make_world,
    staged_firmware,
)
from tools import anchorbundle, cli, keys, pki

UPDATES = "/ota/updates"
BUNDLE_PATH = "/ota/anchors/anchors.json"
# what a failed forced call home may change: the failure and the ladder's report for the next
# call home, when the ladder ran, the clock floor
VOLATILE = ("last_error", "last_call", "anchors_report", "anchors_ladder_at", "time_floor")


def anchor_name(root):
    """The file name the device gives an anchor a bundle brings (anchors._names_for)."""
    return "a-%s.cer" % hashlib.sha256(root.der).hexdigest()[:12]


def days(n):
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=n)


def bundle_fetches(world, since):
    return world.requests(since, BUNDLE_PATH)


def one_cycle_recovery(world, version):
    """The console of the last boot shows the ladder inside the first call-home cycle: one
    "calling home", the ladder, and the update staged by the retry in the same cycle."""
    log = world.console()
    log = log[log.rindex("--- boot 1 (") :]  # the last power-on
    first = log.index("calling home (boot)")
    ladder = log.index("recovery ladder: installed", first)
    staged = log.index("update %s %s staged" % (APP, version), ladder)
    assert "calling home" not in log[first + 20 : staged], log[first:staged]


def recovered_and_updated(world, mark, anchors_version, version="2.0"):
    """Common checks after a recovery: bundle confirmed, the update committed, the recovery
    reported home, the anchor version reported."""
    state = world.state()
    assert state["anchors_version"] == anchors_version
    assert "anchors_pending" not in state and "anchors_report" not in state
    ptr = world.pointer()
    assert ptr["version"] == version and "trial" not in ptr
    report = world.header("x-IAS-RECOVERY", mark)
    assert report is not None and "installed v%d" % anchors_version in report
    assert world.header("x-IAS-ANCHORS", mark) == str(anchors_version)
    one_cycle_recovery(world, version)
    files = world.listing("/cert")
    assert "/cert/bundle.json" in files and "/cert/bundle.sig" in files
    assert not [p for p in files if "pending" in p or "staged" in p]
    return report


# -- recoveries ---------------------------------------------------------------------------------


def test_incident_replay_root_replaced(make_world):  # noqa: F811
    a, b = make_chain("A"), make_chain("B")
    world = make_world(trust=[a.root], serve=a)
    world.boot(1)  # in service: a verified call home, nothing to install yet
    before = world.snapshot()
    world.sign_anchors(2, [a.root, b.root])
    world.serve(b)  # the incident: the server's certificate moves to root B
    world.publish("2.0", 2)
    mark = world.mark()
    world.boot(3)

    report = recovered_and_updated(world, mark, 2)
    assert report.startswith("untrusted@")
    assert "1 %s untrusted" % world.https_rung in report
    assert "2 %s installed v2" % world.http_rung in report
    assert not any(r["tls"] for r in bundle_fetches(world, mark))  # fetched over plain HTTP
    # root A keeps its IAS name, root B is added; nothing else on the flash moved but the app
    assert world.anchor_files() == sorted(["iasRootCa.cer", anchor_name(b.root)])
    after = world.snapshot()
    for path, size in before["tree"].items():
        if path.startswith(("/keys/", "/lib/", "/cert/iasRootCa")):
            assert after["tree"][path] == size, path
    assert_settings_kept(before["settings"], after["settings"], after["app"], "2.0")


def test_expired_root_renewed_in_place(make_world):  # noqa: F811
    # Root A's own validity has ended; the server's chain did not change (its intermediate is
    # still valid). The operator re-issues root A with the same name and key, in a signed bundle.
    a = make_chain("A", root_days=(-400, -1))
    world = make_world(trust=[a.root], serve=a)
    renewed = pki.renew(a.root)
    world.sign_anchors(2, [renewed], expires=days(365))
    world.publish("2.0", 2)
    mark = world.mark()
    world.boot(3)

    report = recovered_and_updated(world, mark, 2)
    assert "expired@" in report or "untrusted@" in report
    assert world.anchor_files() == [anchor_name(renewed)]  # the expired one went at confirm


def test_new_intermediate_under_the_same_root_needs_no_recovery(make_world):  # noqa: F811
    a, b = make_chain("A"), make_chain("B")
    world = make_world(trust=[a.root], serve=a)
    world.boot(1)
    before = world.snapshot()
    world.sign_anchors(2, [a.root, b.root])  # on offer, and must not be needed
    world.serve(make_chain("A2", root=a.root))
    world.publish("2.0", 2)
    mark = world.mark()
    world.boot(3)

    ptr = world.pointer()
    assert ptr["version"] == "2.0" and "trial" not in ptr
    assert bundle_fetches(world, mark) == []
    assert world.header("x-IAS-RECOVERY", mark) is None
    state = world.state()
    assert not [k for k in state if k.startswith("anchors_")]
    after = world.snapshot()
    cert_before = {p: n for p, n in before["tree"].items() if p.startswith("/cert/")}
    assert {p: n for p, n in after["tree"].items() if p.startswith("/cert/")} == cert_before
    assert "recovery ladder" not in world.console()


def test_host_moved_to_an_unrelated_ca_family(make_world):  # noqa: F811
    a, c = make_chain("A"), make_chain("C")
    world = make_world(trust=[a.root], serve=a)
    world.sign_anchors(3, [c.root], hosts=("127.0.0.1", "localhost"))
    world.serve(c)
    world.publish("2.0", 2)
    mark = world.mark()
    world.boot(3)

    recovered_and_updated(world, mark, 3)
    assert world.anchor_files() == [anchor_name(c.root)]  # root A is gone after the confirm

    # Proof that A is no longer trusted and v3 is not installed twice: back on A, a forced
    # call home fails TLS and the ladder finds nothing newer.
    world.serve(a)
    before = world.snapshot()
    res = world.callhome()
    assert (res["outcome"], res["reason"]) == ("error", "untrusted")
    assert_unchanged(before, world.snapshot(), VOLATILE)
    assert "nothing_new" in world.state()["anchors_report"][-3]


def test_update_key_rotated(make_world):  # noqa: F811
    a, b = make_chain("A"), make_chain("B")
    world = make_world(trust=[a.root], serve=a)
    # The operator's whole rotation with the CLI: `ias keys new`, then `ias keys rotate` writes
    # keys.json signed by the old key into the folder `ias serve --anchors` serves. From now on
    # the operator signs with the new key only: the anchor bundle and the next app.
    fresh = world.work / "newkeys"
    assert cli.main(["keys", "new", str(fresh), "--bits", "2048"]) == 0
    until = days(30).strftime("%Y-%m-%dT%H:%M:%SZ")
    rotate = ["keys", "rotate", "--key", str(world.key_path), "--new", str(fresh / "update.pub")]
    assert (
        cli.main(rotate + ["--version", "1", "--until", until, "-o", str(world.anchors_dir)]) == 0
    )
    new_key = keys.load_private(fresh / "update.key")
    new_pem = keys.private_pem(new_key)
    world.sign_anchors(2, [a.root, b.root], key_pem=new_pem)
    world.serve(b)
    world.publish("2.0", 2, key=new_key)
    mark = world.mark()
    world.boot(3)

    recovered_and_updated(world, mark, 2)
    assert world.requests(mark, "/ota/anchors/keys.json")
    assert sorted(p for p in world.listing("/keys")) == ["/keys/k1-0.pub", "/keys/update.pub"]
    assert world.state()["keys_doc"]["names"] == ["k1-0.pub"]
    assert "update keys v1 accepted" in world.console()


def test_shelved_device_recovers_over_plain_http(make_world):  # noqa: F811
    # On the shelf for two years: its only anchor expired a month ago, and the server moved to
    # root B meanwhile. The bundle comes over plain HTTP; only its signature makes it count.
    a, b = make_chain("A", root_days=(-730, -30)), make_chain("B")
    world = make_world(trust=[a.root], serve=b)
    world.sign_anchors(7, [b.root], expires=days(365))
    world.publish("2.0", 2)
    mark = world.mark()
    world.boot(3)

    report = recovered_and_updated(world, mark, 7)
    assert "2 %s installed v7" % world.http_rung in report
    assert "1 %s installed" % world.https_rung not in report
    fetched = bundle_fetches(world, mark)
    assert fetched and not any(r["tls"] for r in fetched)
    assert world.anchor_files() == [anchor_name(b.root)]


# -- refusals -----------------------------------------------------------------------------------
# The device trusts root A; the server presents root B, so every forced call home fails TLS and
# walks the ladder, which finds a bundle that must be refused.


def _foreign_key(world, a, b):
    other = keys.private_pem(keys.new_key(bits=2048))
    world.sign_anchors(2, [a.root, b.root], key_pem=other)
    return "bad_signature"


def _lower_version(world, a, b):
    # First a real recovery to v5 (A and B), confirmed; then the host moves to C and the only
    # bundle on offer is a v4 naming C: a replay of an older signed bundle.
    world.sign_anchors(5, [a.root, b.root])
    res = world.callhome()
    assert res["outcome"] != "error", res
    assert world.state()["anchors_version"] == 5
    c = make_chain("C")
    world.sign_anchors(4, [c.root])
    world.serve(c)
    return "not_newer"


def _expired(world, a, b):
    world.sign_anchors(2, [a.root, b.root], expires=days(-1))
    return "expired"


def _wrong_host(world, a, b):
    world.sign_anchors(2, [a.root, b.root], hosts=("updates.example.com",))
    return "wrong_host"


def _missing_sig(world, a, b):
    world.sign_anchors(2, [a.root, b.root])
    (world.anchors_dir / "anchors.json.sig").unlink()
    return "http_404"


def _garbage_sig(world, a, b):
    world.sign_anchors(2, [a.root, b.root])
    (world.anchors_dir / "anchors.json.sig").write_bytes(bytes(range(256)))
    return "bad_signature"


@pytest.mark.parametrize(
    "case",
    [_foreign_key, _lower_version, _expired, _wrong_host, _missing_sig, _garbage_sig],
    ids=["foreign-key", "lower-version", "expired", "wrong-host", "no-sig", "garbage-sig"],
)
def test_bad_anchor_bundle_refused_and_anchors_kept(make_world, case):  # noqa: F811
    a, b = make_chain("A"), make_chain("B")
    # plain HTTP only: a bundle that arrives unauthenticated must still change nothing
    world = make_world(trust=[a.root], serve=b, recovery="http")
    word = case(world, a, b)
    before = world.snapshot()
    mark = world.mark()
    res = world.callhome()

    assert (res["outcome"], res["reason"]) == ("error", "untrusted")
    assert bundle_fetches(world, mark), "the ladder did not run"
    after = world.snapshot()
    assert_unchanged(before, after, VOLATILE)
    assert "1 %s %s" % (world.http_rung, word) in after["state"]["anchors_report"]

    # The anchors it kept still work: back on the chain it trusts, a verified call home.
    world.serve(a if case is not _lower_version else b)
    res = world.callhome()
    assert res["outcome"] != "error", res
    assert world.anchor_files() == sorted(
        p.rsplit("/", 1)[1] for p in after["tree"] if p.startswith("/cert/") and p.endswith(".cer")
    )


def test_update_key_rotated_while_tls_still_verifies(make_world):  # noqa: F811
    a = make_chain("A")
    world = make_world(trust=[a.root], serve=a)
    new_key = keys.new_key(bits=2048)
    anchorbundle.build_key_doc(
        world.key_path.read_bytes(),
        1,
        [keys.private_pem(new_key)],
        days(30),
        out_dir=world.anchors_dir,
    )
    world.publish("2.0", 2, key=new_key)
    world.boot(3)
    ptr = world.pointer()
    assert ptr["version"] == "2.0" and "trial" not in ptr
