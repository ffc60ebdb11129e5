# Typed signatures on MicroPython: one update key signs manifests, anchor sets, key documents and
# channel documents. Each document, signed by that key, is offered as each of the four kinds,
# through the code the device runs for that kind; only its own kind takes it, every other
# refuses with wrong_kind and changes nothing. The polyglots parse as two kinds (a channel
# document that is also a whole manifest, an anchor set that is also a whole keys.json): there
# only the kind in the signed bytes decides. Untyped documents (signed before kinds) are
# refused as every kind. Fixtures: ota_mkfixtures.py "typed" (the real host tools).
import json

import ota_fixtures as fx
from ias import anchorset, channel, keyrotation, trust
from ias import slots as slots_mod
from ias import state as state_mod
from ias.reason import ReasonError
from ota_fixtures import Ctx, FakeBoard

FIX = fx.make("typed")
META = json.loads(fx.read(FIX + "/typed.json"))
NOW = META["now"]
KEYS = [trust.key_from_pem(fx.read(FIX + "/update.pub"), "update")]
ROOT = "/pc"
KINDS = ("manifest", "anchors", "keys", "channel")
# what each document is (its "kind"); untyped ones are nothing
KIND_OF = {"poly_channel": "channel", "poly_anchors": "anchors"}
for _k in KINDS:
    KIND_OF[_k] = _k


def doc(name):
    return fx.read(FIX + "/" + name + ".json"), fx.read(FIX + "/" + name + ".json.sig")


def fresh():
    fx.unmount(ROOT)
    fx.fresh_flash(ROOT)
    fx.copy_keys(FIX, ("update",), ROOT)
    return fx.tree(ROOT)


# -- the four verifiers, each the device's own code for its kind; each returns what it took ---
def as_manifest(name):
    board = FakeBoard()
    st = state_mod.State(ROOT + "/state.json")
    ctx = Ctx(board, st, slots_mod.Slots(ROOT))
    inst = fx.install(ctx, FIX + "/" + name + ".tar")
    return inst.signed_by


def as_anchors(name):
    raw, sig = doc(name)
    return anchorset.verify_bundle(raw, sig, KEYS, 0, NOW, None)["version"]


def as_keys(name):
    raw, sig = doc(name)
    st = state_mod.State(ROOT + "/state.json")
    return keyrotation.rotate_key(raw, sig, KEYS, st, NOW, ROOT + "/keys")


def as_channel(name):
    raw, sig = doc(name)
    trust.check(raw, sig, KEYS)  # what channel.poll does with channel.json and its .sig
    return channel.parse(raw, "http://cdn.example/app/channel.json")["version"]


VERIFY = {"manifest": as_manifest, "anchors": as_anchors, "keys": as_keys, "channel": as_channel}


def offer(name, kind):
    """(reason or None, the device changed?) of offering document `name` as `kind`."""
    before = fresh()
    try:
        VERIFY[kind](name)
    except ReasonError as e:
        return e.reason, fx.tree(ROOT) != before
    return None, fx.tree(ROOT) != before


def test_each_kind_offered_as_each_kind():
    wrong = []
    for name in ("manifest", "anchors", "keys", "channel", "poly_channel", "poly_anchors"):
        for kind in KINDS:
            reason, changed = offer(name, kind)
            if KIND_OF[name] == kind:
                if reason is not None:
                    wrong.append("%s as %s refused: %s" % (name, kind, reason))
            elif reason != "wrong_kind" or changed:
                wrong.append("%s as %s: %s, changed %s" % (name, kind, reason, changed))
    assert not wrong, wrong


def test_the_channel_polyglot_passes_both_parsers_but_for_its_kind():
    # the control: with "kind" set to either, its fields satisfy both the channel parser and
    # the manifest parser, so in the matrix above only the kind refused it
    from ias import appbundle

    doc_ = json.loads(doc("untyped_poly_channel")[0])
    doc_["kind"] = "channel"
    assert channel.parse(json.dumps(doc_), "http://h/c.json")["app"] == "blink"
    doc_["kind"] = "manifest"
    assert appbundle.parse_manifest(json.dumps(doc_).encode())["name"] == "blink"


def test_untyped_documents_are_refused_as_every_kind():
    wrong = []
    for base in ("manifest", "anchors", "keys", "channel", "poly_channel", "poly_anchors"):
        for kind in KINDS:
            reason, changed = offer("untyped_" + base, kind)
            if reason != "wrong_kind" or changed:
                wrong.append("untyped_%s as %s: %s, changed %s" % (base, kind, reason, changed))
    assert not wrong, wrong


def test_the_refusal_says_what_came_and_what_was_wanted():
    fresh()
    try:
        as_channel("anchors")
        raise AssertionError("an anchor set was taken as a channel document")
    except ReasonError as e:
        assert e.reason == "wrong_kind" and "anchors" in e.detail and "channel" in e.detail, e
    try:
        as_anchors("untyped_anchors")
        raise AssertionError("an untyped anchor set was taken")
    except ReasonError as e:
        assert e.reason == "wrong_kind" and "untyped" in e.detail, e


def test_zz_cleanup():
    fx.unmount(ROOT)
    fx.cleanup(FIX)
