# /state.json writes (state.State.set/update/drop) cut at every program and erase op: the file
# always mounts and loads as the old or the new object, never torn, never lost.
import json

import powercut
from ias import state as state_mod

OLD = {"time_floor": 1700000000, "counters": {"app": 3}, "last_error": "closed"}


def prepare(root):
    st = state_mod.State(root + "/state.json")
    st.update(OLD)


def _sweep(name, operation, new):
    image = powercut.fresh_image(prepare)

    def check(root, completed):
        raw = powercut.read(root + "/state.json")
        assert raw is not None, "state.json vanished"
        doc = json.loads(raw)
        loaded = state_mod.State(root + "/state.json").data
        assert loaded == doc
        if doc == new:
            return "new"
        assert not completed and doc == OLD, "torn state: %r" % raw
        return "old"

    tried, outcomes = powercut.sweep(
        image, lambda root: operation(state_mod.State(root + "/state.json")), check
    )
    powercut.report(name, tried, outcomes)
    assert tried > 3 and outcomes.get("old", 0) >= 1 and outcomes.get("new", 0) >= 1


def test_state_set_survives_every_cut():
    new = dict(OLD, anchors_report=["x" * 40] * 8)
    _sweep("state set", lambda st: st.set("anchors_report", ["x" * 40] * 8), new)


def test_state_update_survives_every_cut():
    new = dict(OLD, counters={"app": 4}, refused_md5=["ab" * 16])
    _sweep(
        "state update",
        lambda st: st.update({"counters": {"app": 4}, "refused_md5": ["ab" * 16]}),
        new,
    )


def test_state_drop_survives_every_cut():
    new = dict(OLD)
    del new["last_error"]
    _sweep("state drop", lambda st: st.drop("last_error"), new)
