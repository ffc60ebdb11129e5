# A whole bundle install (plain tar: parsed and unpacked while it arrives, then the switch; gzip:
# staged, unpacked, switch) cut at every program and erase op of the NOR flash: after each cut
# the flash mounts and the device boots the old version or the new one, complete and matching
# its pointer, never a mix; and a later install still works.
# mptest: timeout=300
import json

import ota_fixtures as fx
import powercut
from ias import slots as slots_mod
from ias import state as state_mod
from ias import trial
from ias.reason import ReasonError
from ota_fixtures import Ctx, FakeBoard

FIX = fx.make("powercut")
MD5 = json.loads(fx.read(FIX + "/md5.json"))
V1 = fx.tree(FIX + "/src_v1")
V2 = fx.tree(FIX + "/src_v2")
RETRY_EVERY = 5  # after every 5th cut, also check that a fresh install succeeds


def ctx_for(root):
    board = FakeBoard()
    return Ctx(board, state_mod.State(root + "/state.json"), slots_mod.Slots(root))


def prepare(root):
    fx.copy_keys(FIX, ("update",), root)
    ctx = ctx_for(root)
    fx.install(ctx, FIX + "/v1.tar")
    trial.boot_check(ctx.board, ctx.state, ctx.slots)
    trial.commit(ctx.board, ctx.state, ctx.slots)


def sweep_install(body, min_old):
    """Cut the install of v2 from FIX/<body>.tar at every flash op in turn."""
    path = FIX + "/" + body + ".tar"

    def install_v2(root):
        try:
            fx.install(ctx_for(root), path)
        except ReasonError as e:
            # only acceptable as the consequence of a cut (the sweep checks the device is dead)
            raise OSError("install failed: %r" % e)

    image = powercut.fresh_image(prepare, blocks=64)
    seen = {"n": 0, "retried": 0}

    def check(root, completed):
        seen["n"] += 1
        ctx = ctx_for(root)
        files = fx.tree(ctx.slots.active_app_dir())
        art = ctx.slots.installed_artifact()
        if files == V2:
            label = "new"
            assert art["md5"] == MD5[body] and ctx.slots.trial() is not None
            assert trial.boot_check(ctx.board, ctx.state, ctx.slots) == "trial"
        else:
            assert files == V1, "active slot holds neither version: %r" % sorted(files or {})
            label = "old"
            assert not completed
            assert art["md5"] == MD5["v1"] and ctx.slots.trial() is None
            assert trial.boot_check(ctx.board, ctx.state, ctx.slots) is None
            if seen["n"] % RETRY_EVERY == 0:  # leftovers of the cut must not block updates
                fx.install(ctx_for(root), path)
                assert fx.tree(slots_mod.Slots(root).active_app_dir()) == V2
                seen["retried"] += 1
        return label

    tried, outcomes = powercut.sweep(image, install_v2, check)
    powercut.report("bundle install v1 -> v2 (%s)" % body, tried, outcomes)
    print("re-installs after a cut: %d, all succeeded" % seen["retried"])
    assert outcomes.get("old", 0) + outcomes.get("new", 0) == tried
    assert outcomes.get("old", 0) >= min_old and outcomes.get("new", 0) >= 1
    assert seen["retried"] >= outcomes["old"] // RETRY_EVERY - 1
    return tried


def test_bundle_install_survives_every_cut():
    # a plain tar is unpacked while it arrives: every op of the install writes the slot or the
    # pointer (no staging file)
    sweep_install("v2", 30)


def test_gzip_bundle_install_survives_every_cut():
    # gzip is staged in /ota.part first, then unpacked from it
    sweep_install("v2gz", 30)


def test_zz_cleanup():
    fx.cleanup(FIX)
