# Installing a signed anchor bundle (install_bundle, then confirm) cut at every program
# and erase op of littlefs on the NOR model. After every cut and the boot-time resume() the
# device holds a usable anchor set that is exactly the old one, the pending union or the new
# one, and the state says which; it never holds zero usable anchors or a torn file.
import powercut
from ias import anchorset, anchortx, certstore
from ias import state as state_mod
from test_anchors import bundle, fixtures, fx, keys_of, new_device, sha


def _prepare(root):
    from ias import fsutil

    fsutil.makedirs(root + "/cert")
    fsutil.write_atomic(root + "/cert/iasRootCa.cer", fx("old1.pem"))
    fsutil.write_atomic(root + "/cert/old2.cer", fx("old2.pem"))
    state_mod.State(root + "/state.json").set("anchors_version", 1)


def _verified(name="good2"):
    dev = new_device()  # keys live on the host folder; only the store goes on the flash
    raw, sig = bundle(name)
    return anchorset.verify_bundle(raw, sig, keys_of(dev), 1, fixtures()["now"])


OLD = sorted([sha("old1"), sha("old2")])
NEW = sorted([sha("old1"), sha("new1"), sha("new2")])
UNION = sorted([sha("old1"), sha("old2"), sha("new1"), sha("new2")])


def _open(root):
    return certstore.CertStore(root + "/cert"), state_mod.State(root + "/state.json")


def _live(store, now):
    """sorted fingerprints of the live anchors; fails on a torn file or no usable anchor."""
    out = sorted(store.load(n).sha256 for n in store.names())
    assert any(r["usable"] for r in store.report(now)), "no usable anchor: %r" % out
    return out


def _check(root, completed, want_done):
    now = fixtures()["now"]
    store, st = _open(root)
    before = _live(store, now)  # as the cut left it: whole anchors of the old or new set
    assert all(h in UNION for h in before), "a foreign anchor before resume"
    anchortx.resume(st, store, now)  # what boot does
    live = _live(store, now)
    p = st.get("anchors_pending")
    if p is not None:
        assert live == UNION, "pending but the store is not the union"
        assert not p.get("confirming"), "resume left a confirm unfinished"
        label = "pending"
    elif st.get("anchors_version") == 2:
        assert live == NEW
        label = "new"
    else:
        assert st.get("anchors_version") == 1 and live == OLD, "old version, other anchors"
        label = "old"
    if completed:
        assert label == want_done, "completed as %s" % label
    return label


def test_install_and_confirm_survive_every_cut():
    bundle_ = _verified()
    now = fixtures()["now"]
    image = powercut.fresh_image(_prepare)

    def op(root):
        store, st = _open(root)
        anchortx.resume(st, store, now)
        anchortx.install_bundle(bundle_, store, st, now)
        assert anchortx.confirm(st, store, now)

    def check(root, completed):
        label = _check(root, completed, "new")
        if label == "pending":  # the next verified call home finishes the job
            store, st = _open(root)
            assert anchortx.confirm(st, store, now)
            assert _live(store, now) == NEW and st.get("anchors_version") == 2
        return label

    tried, outcomes = powercut.sweep(image, op, check)
    powercut.report("anchor bundle install+confirm", tried, outcomes)
    assert tried > 20
    for label in ("old", "pending", "new"):
        assert outcomes.get(label, 0) >= 1, outcomes
