# A settings save cut at every program and erase op: the flash always mounts and holds the old
# or the new settings, never neither.
import json

import powercut
from ias import settings


def _save(root, interval):
    s = settings.load(root + "/settings.json")
    s["interval"] = interval
    s["wifi"] = [{"ssid": "lab-%d" % interval, "password": "password%d" % interval}]
    settings.save(s, root + "/settings.json")


def test_settings_save_survives_every_cut():
    image = powercut.fresh_image(lambda root: _save(root, 600))

    def check(root, completed):
        raw = powercut.read(root + "/settings.json")
        assert raw is not None, "settings vanished"
        interval = json.loads(raw)["interval"]
        assert interval in (600, 900), "torn settings: %r" % raw
        loaded = settings.load(root + "/settings.json")
        assert loaded["interval"] == interval
        if completed:
            assert interval == 900
        return "new" if interval == 900 else "old"

    tried, outcomes = powercut.sweep(image, lambda root: _save(root, 900), check)
    powercut.report("settings save", tried, outcomes)
    assert tried > 3
    assert outcomes.get("old", 0) >= 1 and outcomes.get("new", 0) >= 1
