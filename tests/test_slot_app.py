"""The user's app and the client share one interpreter: an app that brings its own `settings.py`,
`httpclient.py` and an `ota` package (names the client's modules had when they sat flat in /lib)
and imports a helper from its slot's lib/ inside loop() runs with its own modules, the client's
stay intact, and its trial commits through the client's own call home. A virtual ESP32 boots from
its flash against `ias serve` over real TLS, as a user's board would."""

import pytest

from tests.scenario import APP, make_chain, make_world, staged_firmware  # noqa: F401 (fixtures)
from tools import bundle

APP_PY = """\
import settings  # the app's own, not the client's ias.settings
import httpclient
import ota

_seen = {"loop": False}


def setup(ias):
    # the client may have released its settings module (a phase ended): import it again, by
    # its package name, and it must still be the client's, not the app's settings.py
    from ias import settings as client
    print("SLOTAPP setup settings=%s httpclient=%s ota=%s client_settings=%s" % (
        settings.OWNER, httpclient.OWNER, ota.OWNER, hasattr(client, "load")))


def loop(ias):
    if _seen["loop"]:
        return
    _seen["loop"] = True
    import helper  # from the slot's lib/, long after `import app` returned
    from ias import httpclient as client  # the client's, whatever the app's lib/ holds
    print("SLOTAPP loop helper=%s client_httpclient=%s version=%s" % (
        helper.OWNER, hasattr(client, "read_head"), ias.version))
"""


def _app_source(tmp_path, version):
    src = tmp_path / ("slot-app-%s" % version)
    (src / "lib").mkdir(parents=True)
    (src / "ota").mkdir()
    (src / "app.py").write_text(APP_PY)
    (src / "settings.py").write_text('OWNER = "app"\nload = None  # not the client\'s\n')
    (src / "httpclient.py").write_text('OWNER = "app"\n')
    (src / "ota" / "__init__.py").write_text('OWNER = "app"\n')
    (src / "lib" / "helper.py").write_text('OWNER = "app-lib"\n')
    return src


@pytest.fixture
def world(make_world):  # noqa: F811
    chain = make_chain("A")
    return make_world(trust=[chain.root], serve=chain)


def test_app_modules_do_not_replace_the_clients_and_its_trial_commits(world, tmp_path):
    world.boot(1)
    folder = world.work / "artifacts" / APP
    folder.mkdir(parents=True, exist_ok=True)
    data = bundle.build(_app_source(tmp_path, "3.0"), world.key, APP, "3.0", 3, True)
    name = "%s-3.0.tar.gz" % APP
    (folder / name).write_bytes(data)
    (folder / "current.json").write_text(
        '{"name": "%s", "version": "3.0", "file": "%s"}' % (APP, name)
    )

    world.boot(4)  # install, reset into the trial, call home (the commit), run on
    console = world.console()
    ptr = world.pointer()
    assert ptr.get("version") == "3.0" and "trial" not in ptr, console[-3000:]
    setup_lines = [x for x in console.splitlines() if "SLOTAPP setup" in x]
    loop_lines = [x for x in console.splitlines() if "SLOTAPP loop" in x]
    assert setup_lines and loop_lines, console[-3000:]
    assert all(
        x.endswith("settings=app httpclient=app ota=app client_settings=True") for x in setup_lines
    ), setup_lines
    assert all(
        x.endswith("helper=app-lib client_httpclient=True version=3.0") for x in loop_lines
    ), loop_lines
    assert "rollback" not in console.split("SLOTAPP setup", 1)[1], console[-3000:]
