# Anchor writes cut at every program and erase op of littlefs on the NOR model. After each cut
# the store must hold at least one usable anchor and no torn .cer file; after recover() (what
# boot does) it must be exactly the old set or exactly the new one.
import time

import powercut
from ias import certstore

NOW = int(time.time())
CERTS = "../../firmware/cert/"


def pem(name):
    with open(CERTS + name) as f:
        return f.read()


OLD = (("iasRootCa.cer", "iasRootCa.cer"), ("isrgRootX1.cer", "isrgRootX1.cer"))
# The new set renews iasRootCa.cer in place (Sectigo R46), keeps one and brings two new.
NEW = (
    ("iasRootCa.cer", "sectigoR46.cer"),
    ("isrgRootX1.cer", "isrgRootX1.cer"),
    ("usertrustRsa.cer", "usertrustRsa.cer"),
    ("isrgRootX2.cer", "isrgRootX2.cer"),
)


def prepare(root):
    store = certstore.CertStore(root + "/cert")
    for name, src in OLD:
        store.add(name, pem(src), NOW)


def state(root):
    """{name: sha256} of the live anchors; fails on any torn or unparsable .cer file."""
    store = certstore.CertStore(root + "/cert")
    out = {}
    for name in store.names():
        c = store.load(name)  # raises ReasonError on a torn file
        out[name] = c.sha256
    usable = [r for r in store.report(NOW) if r["usable"]]
    assert usable, "no usable anchor left: %r" % out
    return store, out


def fingerprints(pairs):
    from ias import der

    return {name: der.load(pem(src)).sha256 for name, src in pairs}


def test_add_anchor_survives_every_cut():
    image = powercut.fresh_image(prepare)
    old = fingerprints(OLD)
    new = dict(old)
    new["sectigoE46.cer"] = fingerprints((("x", "sectigoE46.cer"),))["x"]

    def op(root):
        certstore.CertStore(root + "/cert").add("sectigoE46.cer", pem("sectigoE46.cer"), NOW)

    def check(root, completed):
        store, live = state(root)
        assert live in (old, new), "unexpected set %r" % live
        if completed:
            assert live == new
        store.recover()
        assert all(not n.endswith(".tmp") for n in powercut.listdir(root + "/cert"))
        return "new" if live == new else "old"

    tried, outcomes = powercut.sweep(image, op, check)
    powercut.report("anchor add", tried, outcomes)
    assert tried > 3 and outcomes.get("old") and outcomes.get("new")


def test_replace_set_survives_every_cut():
    image = powercut.fresh_image(prepare)
    old, new = fingerprints(OLD), fingerprints(NEW)
    mixed = {}

    def op(root):
        certstore.CertStore(root + "/cert").replace_set([(n, pem(s)) for n, s in NEW], NOW)

    def check(root, completed):
        store, live = state(root)
        # Before recovery: every file is whole and is an old or a new anchor.
        for name, fp in live.items():
            assert fp in (old.get(name), new.get(name)), "%s holds a foreign cert" % name
        if live not in (old, new):
            mixed["before_recover"] = mixed.get("before_recover", 0) + 1
        store.recover()
        _, after = state(root)
        assert after in (old, new), "after recover: %r" % after
        assert powercut.listdir(root + "/cert") == sorted(after), "leftovers after recover"
        if completed:
            assert live == new
        return "new" if after == new else "old"

    tried, outcomes = powercut.sweep(image, op, check)
    powercut.report("anchor replace_set", tried, outcomes)
    print(
        "  cuts that left a mixed (old and new, each whole) set before recover(): %d"
        % mixed.get("before_recover", 0)
    )
    assert tried > 10 and outcomes.get("old") and outcomes.get("new")


def test_remove_survives_every_cut():
    image = powercut.fresh_image(prepare)
    old = fingerprints(OLD)
    new = {"iasRootCa.cer": old["iasRootCa.cer"]}

    def op(root):
        certstore.CertStore(root + "/cert").remove("isrgRootX1.cer", NOW)

    def check(root, completed):
        _, live = state(root)
        assert live in (old, new)
        return "new" if live == new else "old"

    tried, outcomes = powercut.sweep(image, op, check)
    powercut.report("anchor remove", tried, outcomes)
    assert outcomes.get("old") and outcomes.get("new")
