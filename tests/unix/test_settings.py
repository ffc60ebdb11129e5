# Settings: validation, defaults on a bad file, write-temp-then-rename, no write when unchanged.
import os

from ias import settings
from ias.reason import ReasonError

TMP = "/tmp/ias_settings_test.json"


def _clean():
    for p in (TMP, TMP + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass


def test_missing_file_gives_defaults():
    _clean()
    s = settings.load(TMP)
    assert s["server"] == "https://iotappstory.com"
    assert s["interval"] == 7200
    assert s["wifi"] == []


def test_corrupt_file_gives_defaults():
    _clean()
    with open(TMP, "w") as f:
        f.write('{"wifi": [ broken')
    assert settings.load(TMP)["server"] == "https://iotappstory.com"
    with open(TMP, "w") as f:
        f.write('{"interval": "soon"}')
    assert settings.load(TMP)["interval"] == 7200


def test_save_then_load_round_trip():
    _clean()
    s = settings.load(TMP)
    s["wifi"] = [{"ssid": "lab", "password": "labpass1"}]
    s["fields"] = {"colour": "red"}
    assert settings.save(s, TMP) is True
    back = settings.load(TMP)
    assert back["wifi"] == [{"ssid": "lab", "password": "labpass1"}]
    assert back["fields"] == {"colour": "red"}


def test_save_unchanged_writes_nothing():
    _clean()
    s = settings.load(TMP)
    assert settings.save(s, TMP) is True
    before = os.stat(TMP)
    assert settings.save(settings.load(TMP), TMP) is False
    after = os.stat(TMP)
    # inode, size and mtime: unchanged means not rewritten (atime may move on a read)
    assert (after[1], after[6], after[8]) == (before[1], before[6], before[8])


def test_rejects_bad_values():
    bad = [
        {"wifi": [{"ssid": "", "password": ""}]},
        {"wifi": [{"ssid": "a", "password": "short"}]},
        {"wifi": [{"ssid": "n%d" % i} for i in range(4)]},
        {"interval": 5},
        {"interval": True},
        {"server": "ftp://x"},
        {"server": ""},
        {"act_code": "1234567"},
        {"ap_open": "yes"},
        {"fields": {"x": 3}},
        {"recovery": ["gopher://x"]},
        [],
    ]
    for data in bad:
        try:
            settings.validate(data)
        except ReasonError:
            continue
        raise AssertionError("accepted %r" % (data,))


def test_invalid_save_leaves_file_alone():
    _clean()
    s = settings.load(TMP)
    settings.save(s, TMP)
    with open(TMP) as f:
        before = f.read()
    s["interval"] = -1
    try:
        settings.save(s, TMP)
    except ReasonError:
        pass
    else:
        raise AssertionError("saved an invalid interval")
    with open(TMP) as f:
        assert f.read() == before
