# A rollback (the version on trial failed) cut at every program and erase op: after each cut the
# flash mounts and the device runs either the old version (rolled back, the failed artifact
# refused, the reason kept) or still the new one on trial, which the next boot rolls back; never
# a mix and never an unbootable pointer.
# mptest: timeout=300
import json

import ota_fixtures as fx
import powercut
from ias import slots as slots_mod
from ias import state as state_mod
from ias import trial
from ota_fixtures import Ctx, FakeBoard

FIX = fx.make("powercut")
MD5 = json.loads(fx.read(FIX + "/md5.json"))
V1 = fx.tree(FIX + "/src_v1")
V2 = fx.tree(FIX + "/src_v2")


def ctx_for(root):
    return Ctx(FakeBoard(), state_mod.State(root + "/state.json"), slots_mod.Slots(root))


def prepare(root):
    fx.copy_keys(FIX, ("update",), root)
    ctx = ctx_for(root)
    fx.install(ctx, FIX + "/v1.tar")
    trial.boot_check(ctx.board, ctx.state, ctx.slots)
    trial.commit(ctx.board, ctx.state, ctx.slots)
    fx.install(ctx_for(root), FIX + "/v2.tar")  # v2 now on trial


def roll_back(root):
    ctx = ctx_for(root)
    assert trial.rollback(ctx.board, ctx.state, "app failed", ctx.slots, reset=False)


def test_rollback_survives_every_cut():
    image = powercut.fresh_image(prepare, blocks=64)
    seen = {"again": 0}

    def check(root, completed):
        ctx = ctx_for(root)
        files = fx.tree(ctx.slots.active_app_dir())
        art = ctx.slots.installed_artifact()
        if files == V1 and ctx.slots.trial() is None:
            assert art["md5"] == MD5["v1"]
            if completed:
                assert MD5["v2"] in ctx.state.get(trial.REFUSED_KEY, [])
                assert "app failed" in (trial.last_error(ctx.state) or "")
            return "rolled back"
        assert not completed, "rollback completed but v1 is not active"
        assert files == V2 and ctx.slots.trial() is not None, "neither version: %r" % files
        # still on trial: the rollback runs again (as the next boot's trial check would)
        roll_back(root)
        assert fx.tree(slots_mod.Slots(root).active_app_dir()) == V1
        seen["again"] += 1
        return "still on trial, rolled back on retry"

    tried, outcomes = powercut.sweep(image, roll_back, check)
    powercut.report("rollback v2 -> v1", tried, outcomes)
    assert tried > 3 and outcomes.get("rolled back", 0) >= 1
    assert seen["again"] >= 1


def test_zz_cleanup():
    fx.cleanup(FIX)
