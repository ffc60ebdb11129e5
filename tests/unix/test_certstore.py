# certstore.py and net.py on the MicroPython unix port, the store on littlefs over the NOR model:
# validation of added anchors, the last-anchor rule, replace_set, the TLS context, URL parsing,
# and the mapping of socket and mbedTLS failures to reasons.
import os
import time

import fakesock

fake = fakesock.install()  # before net imports socket: connect() then meets scripted failures

import nor  # noqa: E402
import test_der as mk  # noqa: E402  (the DER builder)
import vfs  # noqa: E402
from ias import (
    certstore,  # noqa: E402
    der,  # noqa: E402
    net,  # noqa: E402
)
from ias.reason import ReasonError  # noqa: E402

ROOT = "/cs/cert"
NOW = int(time.time())
SHIPPED = (
    "iasRootCa.cer",
    "isrgRootX1.cer",
    "isrgRootX2.cer",
    "sectigoE46.cer",
    "sectigoR46.cer",
    "usertrustEcc.cer",
    "usertrustRsa.cer",
)


DEV = nor.NorFlash(48)


def fresh():
    try:
        vfs.umount("/cs")
    except OSError:
        pass
    nor.mount(DEV, "/cs", mkfs=True)
    return certstore.CertStore(ROOT)


def pem(name):
    return mk.anchor(name)


def refused(fn, reason):
    try:
        fn()
    except ReasonError as e:
        assert e.reason == reason, "want %s, got %r" % (reason, e)
        return e
    raise AssertionError("not refused (want %s)" % reason)


def shipped_store(names=SHIPPED):
    store = fresh()
    for n in names:
        store.add(n, pem(n), NOW)
    return store


def test_add_shipped_anchors_and_report():
    store = shipped_store()
    assert store.names() == sorted(SHIPPED)
    rows = {r["name"]: r for r in store.report(NOW)}
    ias = rows["iasRootCa.cer"]
    assert ias["subject"] == "CN=AAA Certificate Services, O=Comodo CA Limited"
    assert ias["issuer"] == ias["subject"]
    assert ias["valid_until"] == "2028-12-31" and ias["not_after"] == 1861919999
    assert ias["days_left"] == (1861919999 - NOW) // 86400
    assert ias["is_ca"] and ias["usable"]
    assert all(r["usable"] for r in rows.values())
    assert store.earliest_expiry(NOW) == 1861919999
    # After AAA expires, the next one counts (ISRG Root X1, 2035-06-04).
    assert store.earliest_expiry(1861919999 + 1) == 2064567878


def test_stored_as_pem_from_der():
    store = fresh()
    raw = der.pem_blocks(pem("isrgRootX2.cer"))[0]
    store.add("x2.cer", raw, NOW)
    with open(ROOT + "/x2.cer") as f:
        text = f.read()
    assert text.startswith("-----BEGIN CERTIFICATE-----\n") and der.pem_blocks(text) == [raw]


def test_rejects_garbage_truncated_oversized():
    store = shipped_store(("iasRootCa.cer",))
    good = pem("isrgRootX1.cer")
    raw = der.pem_blocks(good)[0]
    refused(lambda: store.add("a.cer", b"\x00\x01garbage", NOW), "garbage")
    refused(lambda: store.add("a.cer", "hello", NOW), "garbage")
    refused(lambda: store.add("a.cer", raw[: len(raw) // 2], NOW), "truncated")
    refused(lambda: store.add("a.cer", good[: len(good) // 2], NOW), "truncated")
    refused(lambda: store.add("a.cer", b"\x30\x82\x30\x00" + bytes(0x3000), NOW), "oversized")
    refused(lambda: store.add("a.cer", good + good, NOW), "garbage")
    assert store.names() == ["iasRootCa.cer"]


def test_rejects_leaf_duplicate_expired():
    store = shipped_store(("iasRootCa.cer",))
    leaf = mk.build(cn=b"iotappstory.com", issuer=b"Sectigo RSA DV", ca=False)
    e = refused(lambda: store.add("leaf.cer", leaf, NOW), "not_ca")
    assert "iotappstory.com" in str(e)
    refused(lambda: store.add("copy.cer", pem("iasRootCa.cer"), NOW), "duplicate")
    old = mk.build(cn=b"Old Root", not_before=NOW - 800 * 86400, not_after=NOW - 86400)
    refused(lambda: store.add("old.cer", old, NOW), "expired")
    assert store.names() == ["iasRootCa.cer"]
    future = mk.build(cn=b"Next Root", not_before=NOW + 86400)  # staged ahead: accepted
    store.add("next.cer", future, NOW)
    assert [r["usable"] for r in store.report(NOW) if r["name"] == "next.cer"] == [False]


def test_rejects_unsafe_names():
    store = fresh()
    for bad in (
        "../x.cer",
        "a/b.cer",
        ".cer",
        ".hidden.cer",
        "a.pem",
        "a b.cer",
        "x" * 41 + ".cer",
        "a.cer\x00",
        7,
        "é.cer",
    ):
        refused(lambda b=bad: store.add(b, pem("isrgRootX2.cer"), NOW), "bad_name")
    assert store.names() == []


def test_existing_name_needs_replace():
    store = shipped_store(("iasRootCa.cer", "isrgRootX1.cer"))
    refused(lambda: store.add("iasRootCa.cer", pem("sectigoR46.cer"), NOW), "exists")
    store.add("iasRootCa.cer", pem("sectigoR46.cer"), NOW, replace=True)
    assert store.load("iasRootCa.cer").subject["CN"].startswith("Sectigo Public Server")


def test_replacing_the_only_usable_anchor_with_a_future_one_is_refused():
    store = shipped_store(("iasRootCa.cer",))
    future = mk.build(cn=b"Next Root", not_before=NOW + 86400)
    refused(lambda: store.add("iasRootCa.cer", future, NOW, replace=True), "last_anchor")
    assert store.load("iasRootCa.cer").subject["CN"] == "AAA Certificate Services"


def test_last_usable_anchor_is_not_removable():
    store = shipped_store(("iasRootCa.cer", "isrgRootX1.cer"))
    store.remove("isrgRootX1.cer", NOW)
    refused(lambda: store.remove("iasRootCa.cer", NOW), "last_anchor")
    refused(lambda: store.remove("nothere.cer", NOW), "missing")
    # A not-yet-valid anchor does not count as usable.
    store.add("next.cer", mk.build(cn=b"Next", not_before=NOW + 86400), NOW)
    refused(lambda: store.remove("iasRootCa.cer", NOW), "last_anchor")
    store.remove("next.cer", NOW)
    # An unreadable file trusts nothing and may always go.
    with open(ROOT + "/torn.cer", "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nMIIB")
    rows = {r["name"]: r for r in store.report(NOW)}
    assert rows["torn.cer"] == {"name": "torn.cer", "usable": False, "error": "unreadable"}
    store.remove("torn.cer", NOW)
    assert store.names() == ["iasRootCa.cer"]


def test_context_loads_every_anchor_and_skips_broken_files():
    store = shipped_store()
    with open(ROOT + "/aaa_broken.cer", "w") as f:
        f.write("not a certificate")
    ctx = store.context()
    assert store.loaded == len(SHIPPED)
    assert type(ctx).__name__ == "SSLContext"
    import tls

    assert ctx.verify_mode == tls.CERT_REQUIRED


def test_context_only_loads_the_named_anchors():
    # a pending anchor set is tried alone first (transport.py, design §1 rule 8)
    store = shipped_store()
    names = store.names()
    store.context(names[:1])
    assert store.loaded == 1
    refused(lambda: store.context(["absent.cer"]), "no_anchors")


def test_context_without_anchors():
    store = fresh()
    refused(store.context, "no_anchors")
    os.mkdir(ROOT)
    with open(ROOT + "/x.cer", "w") as f:
        f.write("garbage")
    refused(store.context, "no_anchors")


def test_replace_set_installs_exactly_the_new_set():
    store = shipped_store(("iasRootCa.cer", "usertrustRsa.cer", "isrgRootX1.cer"))
    old = mk.build(cn=b"Old Root", not_before=NOW - 800 * 86400, not_after=NOW - 86400)
    store.replace_set(
        [
            ("iasRootCa.cer", pem("sectigoR46.cer")),
            ("x2.cer", pem("isrgRootX2.cer")),
            ("old.cer", old),
            ("isrgRootX1.cer", pem("isrgRootX1.cer")),
        ],
        NOW,
    )
    assert store.names() == ["iasRootCa.cer", "isrgRootX1.cer", "x2.cer"]  # expired left out
    assert store.load("iasRootCa.cer").subject["CN"].startswith("Sectigo")
    assert sorted(os.listdir(ROOT)) == store.names()  # no temp or pending file left


def test_replace_set_refuses_bad_sets_and_keeps_the_old_one():
    store = shipped_store(("iasRootCa.cer", "isrgRootX1.cer"))
    before = [(r["name"], r["sha256"]) for r in store.report(NOW)]
    leaf = mk.build(cn=b"leaf", issuer=b"x", ca=False)
    old = mk.build(cn=b"Old Root", not_before=NOW - 800 * 86400, not_after=NOW - 86400)
    future = mk.build(cn=b"Next Root", not_before=NOW + 86400)
    refused(lambda: store.replace_set([], NOW), "no_anchors")
    refused(
        lambda: store.replace_set([("a.cer", pem("isrgRootX2.cer")), ("b.cer", leaf)], NOW),
        "not_ca",
    )
    refused(lambda: store.replace_set([("a.cer", old), ("b.cer", future)], NOW), "no_anchors")
    refused(
        lambda: store.replace_set(
            [("a.cer", pem("isrgRootX2.cer")), ("b.cer", pem("isrgRootX2.cer"))], NOW
        ),
        "duplicate",
    )
    refused(lambda: store.replace_set([("../a.cer", pem("isrgRootX2.cer"))], NOW), "bad_name")
    refused(lambda: store.replace_set([("a.cer", "garbage")], NOW), "garbage")
    assert [(r["name"], r["sha256"]) for r in store.report(NOW)] == before


def test_recover_rolls_a_cut_replace_forward_only_when_complete():
    store = shipped_store(("iasRootCa.cer", "isrgRootX1.cer", "isrgRootX2.cer"))
    with open(ROOT + "/replace.pending", "w") as f:
        f.write("isrgRootX2.cer\nmissing.cer")
    with open(ROOT + "/x.cer.tmp", "w") as f:
        f.write("half")
    store.recover()  # the set is incomplete: nothing removed, the intent dropped
    assert sorted(os.listdir(ROOT)) == ["iasRootCa.cer", "isrgRootX1.cer", "isrgRootX2.cer"]
    with open(ROOT + "/replace.pending", "w") as f:
        f.write("isrgRootX2.cer\nisrgRootX1.cer")
    store.recover()
    assert sorted(os.listdir(ROOT)) == ["isrgRootX1.cer", "isrgRootX2.cer"]
    # Staged files without the intent (cut before the commit point) are dropped.
    os.mkdir(ROOT + "/staged")
    with open(ROOT + "/staged/new.cer", "w") as f:
        f.write(pem("sectigoE46.cer"))
    store.recover()
    assert sorted(os.listdir(ROOT)) == ["isrgRootX1.cer", "isrgRootX2.cer"]
    # With the intent, they are moved in.
    os.mkdir(ROOT + "/staged")
    with open(ROOT + "/staged/new.cer", "w") as f:
        f.write(pem("sectigoE46.cer"))
    with open(ROOT + "/replace.pending", "w") as f:
        f.write("new.cer\nisrgRootX1.cer")
    store.recover()
    assert sorted(os.listdir(ROOT)) == ["isrgRootX1.cer", "new.cer"]


# -- connect() before TLS, through the fake socket module ------------------------------------
class Board:
    tls_verifies = True
    clock_synced = True

    def __init__(self, t=None):
        self.t = NOW if t is None else t

    def time(self):
        return self.t


def net_refused(fn, reason):
    try:
        fn()
    except ReasonError as e:
        assert e.reason == reason, "want %s, got %r" % (reason, e)
        return e
    raise AssertionError("no ReasonError (want %s)" % reason)


def test_connect_refuses_without_a_sane_clock():
    store = shipped_store(("iasRootCa.cer",))
    del fake.sockets[:]
    b = Board()
    b.clock_synced = False
    net_refused(lambda: certstore.connect("h", 443, store, b), "clock_unset")
    net_refused(lambda: certstore.connect("h", 443, store, Board(946684800)), "clock_unset")
    # A persisted floor above the clock also refuses.
    net_refused(
        lambda: certstore.connect("h", 443, store, Board(), floor=NOW + 3600), "clock_unset"
    )
    assert fake.sockets == []  # refused before any socket was opened


def test_connect_dns_refused_timeout():
    store = shipped_store(("iasRootCa.cer",))
    fake.resolve_fail.add("nowhere.example")
    net_refused(lambda: certstore.connect("nowhere.example", 443, store, Board()), "dns")
    fake.refuse.add(("closed.example", 443))
    net_refused(lambda: certstore.connect("closed.example", 443, store, Board()), "refused")
    sock = net.tcp_connect("ok.example", 443, 2500)
    assert sock.timeout == 2.5 and sock.peer == ("ok.example", 443)


def test_connect_without_anchors_is_untrusted():
    store = fresh()
    net_refused(lambda: certstore.connect("h", 443, store, Board()), "untrusted")


# -- net.py ------------------------------------------------------------------------------------
def test_parse_url():
    assert net.parse_url("https://iotappstory.com/ota/updates?x=1") == (
        "https",
        "iotappstory.com",
        443,
        "/ota/updates?x=1",
    )
    assert net.parse_url("http://10.0.0.2:8080") == ("http", "10.0.0.2", 8080, "/")
    assert net.parse_url("HTTPS://h:1/#frag") == ("https", "h", 1, "/")
    assert net.parse_url("https://[::1]:8443/a") == ("https", "::1", 8443, "/a")
    assert net.parse_url("http://h?q") == ("http", "h", 80, "/?q")
    for bad in (
        "",
        "iotappstory.com/x",
        "ftp://h/",
        "https://",
        "https://:80/",
        "http://h:0/",
        "http://h:99999/",
        "http://h:x/",
        "http://u:p@h/",
        "http://[::1/",
        "http://a b/",
        None,
    ):
        try:
            net.parse_url(bad)
        except ValueError as e:
            assert "bad url" in str(e)
            continue
        raise AssertionError("accepted %r" % bad)


def test_mbedtls_failures_map_to_reasons():
    cases = (
        (ValueError("\nThe certificate is not correctly signed by the trusted CA\n"), "untrusted"),
        (ValueError("\nThe certificate validity has expired\n"), "expired"),
        (ValueError("\nThe certificate validity starts in the future\n"), "not_yet_valid"),
        (
            ValueError("\nThe certificate Common Name (CN) does not match with the expected CN\n"),
            "name_mismatch",
        ),
        (
            ValueError(
                "\nThe certificate Common Name (CN) does not match with the expected CN\n\n"
                "The certificate is not correctly signed by the trusted CA\n"
            ),
            "untrusted",
        ),
        (ValueError("CERT_REQUIRED requires server_hostname"), "tls_error"),
        (OSError(-30336, "MBEDTLS_ERR_SSL_CA_CHAIN_REQUIRED"), "tls_error"),
        (OSError(-30592, "MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE"), "tls_error"),
        (OSError(110), "timeout"),
        (OSError(11), "timeout"),
        (OSError(-29312, "MBEDTLS_ERR_SSL_CONN_EOF"), "closed"),
        (OSError(104), "closed"),
        (MemoryError(), "tls_error"),
    )
    for exc, reason in cases:
        got = net.from_exception(exc)
        assert got.reason == reason, "%r -> %s, want %s" % (exc, got.reason, reason)
    e = net.from_exception(ValueError("\nThe certificate validity has expired\n"), "handshake")
    assert (
        e.detail == "handshake: The certificate validity has expired" and e.reason in net.REASONS
    )
