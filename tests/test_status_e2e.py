"""Issue 18 item 5, end to end: a virtual ESP32 boots from its flash, calls `ias serve` over real
TLS, installs and commits an update through its own main loop; `ias status DIR` and `ias logs
DIR` then show the new version, the anchors' earliest expiry, the last call home and the log;
a later power-on whose call home gets 304 writes not one flash program or erase, and the log
is unchanged. The same status is read from a board on a serial port (the pty fake device over
mpremote's raw REPL) holding the same flash."""

import json
import shutil

import pytest

from tests.ptydevice import PtyDevice
from tests.scenario import (  # noqa: F401 (fixtures)
    APP,
    make_chain,
    make_world,
    staged_firmware,
)
from tools import cli


@pytest.fixture
def world(make_world):  # noqa: F811
    chain = make_chain("A")
    return make_world(trust=[chain.root], serve=chain)


def ias(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def flash_ops(world):
    path = world.board / "flash_ops.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_status_and_logs_after_an_update_and_a_silent_304(world, capsys):
    world.publish("2.0", 2)
    world.boot(3)  # call home, install, reset, trial boot, call home (304), commit
    assert world.pointer().get("version") == "2.0", world.console()[-3000:]

    code, out, err = ias(capsys, "status", str(world.board), "--json")
    assert code == 0, err
    st = json.loads(out)
    assert st["app"] == {"name": APP, "version": "2.0", "slot": "slot_b"}
    assert st["trial"] is None
    assert st["firmware"].startswith("MicroPython 1.")
    assert st["anchors"] == 1 and st["earliest_expiry"]["name"] == "iasRootCa.cer"
    assert "Root A" in st["earliest_expiry"]["subject"]
    assert st["update_keys"] == ["update.pub"]
    assert st["last_call"]["line"].startswith("callhome: up-to-date"), st["last_call"]
    assert st["last_call"]["time"] > 1700000000  # the board's clock, set by NTP
    assert st["settings"]["wifi"] == ["ias-lab"]  # names only: the password is a secret
    assert "lab-password" not in out
    assert st["settings"]["server"] == world.url

    code, text, _ = ias(capsys, "status", str(world.board))
    assert code == 0
    assert "%s 2.0 in slot_b" % APP in text
    assert "none: the running version is committed" in text
    assert "days left" in text and "settings (secrets hidden):" in text

    code, logs, _ = ias(capsys, "logs", str(world.board))
    assert code == 0
    for words in (
        "I callhome: update %s 2.0 staged" % APP,
        "I ota: switched to %s 2.0, resetting" % APP,
        "I ota: trial boot 1 of %s 2.0" % APP,
        "I ota: committed %s 2.0" % APP,
    ):
        assert words in logs, (words, logs)
    dated = [ln for ln in logs.splitlines() if "staged" in ln][0]
    assert dated[:2] == "20" and " UTC  I callhome" in dated  # dates, not epoch seconds
    order = [logs.index(w) for w in ("staged", "switched", "trial boot", "committed")]
    assert order == sorted(order)

    # A power-on whose call home gets 304: the log stays in RAM, the flash is not touched.
    before_ops = len(flash_ops(world))
    mark = world.mark()
    world.boot(1)
    assert len(world.requests(mark, "/ota/updates")) == 1
    assert "I callhome: up-to-date (Not Modified)" in world.console().split("--- boot")[-1]
    ops = flash_ops(world)[before_ops:]
    assert [(o["programs"], o["erases"]) for o in ops if o["mode"] == "boot"] == [(0, 0)], ops
    code, logs_after, _ = ias(capsys, "logs", str(world.board))
    assert logs_after == logs
    # Reading status and logs wrote nothing either (the image is mounted read-only).
    assert flash_ops(world)[-1]["mode"] == "boot"


def test_status_of_a_board_on_a_serial_port(world, capsys, tmp_path):
    world.publish("2.0", 2)
    world.boot(3)
    code, virtual, _ = ias(capsys, "status", str(world.board), "--json")
    image = tmp_path / "board.img"
    shutil.copy(world.board / "flash.bin", image)  # the same flash, now behind a serial port
    blocks = image.stat().st_size // 4096
    with PtyDevice(image, blocks=blocks) as dev:
        code, out, err = ias(capsys, "status", dev.port, "--json")
        assert code == 0, err
        code, logs, err2 = ias(capsys, "logs", dev.port, "-n", "3")
        assert code == 0, err2
    real, virt = json.loads(out), json.loads(virtual)
    assert real["board"] == "linux on %s" % dev.port
    for key in ("app", "trial", "anchors", "earliest_expiry", "last_call", "settings"):
        assert real[key] == virt[key], key
    assert len(logs.splitlines()) == 3 and "committed %s 2.0" % APP in logs


def test_status_refuses_what_is_no_board_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["status", str(tmp_path)])
    assert str(e.value) == "ias status: %s holds no virtual board (no flash.bin)" % tmp_path
    with pytest.raises(SystemExit) as e:
        cli.main(["logs", str(tmp_path / "nothere")])
    assert str(e.value) == (
        "ias logs: %s is neither a virtual board's folder nor a serial port (e.g. /dev/ttyUSB0)"
        % (tmp_path / "nothere")
    )
    with pytest.raises(SystemExit) as e:
        cli.main(["status", "/dev/ttyIAS-none"])
    assert str(e.value) == "ias status: no such serial port: /dev/ttyIAS-none"


def test_a_rollback_is_in_the_log_and_the_status(world, capsys):
    world.publish("2.0", 2)
    world.boot(3)
    world.publish("3.0", 3, broken=True)  # fails at import: rolled back at once
    world.boot(3)
    assert world.pointer()["version"] == "2.0"
    code, out, _ = ias(capsys, "status", str(world.board), "--json")
    st = json.loads(out)
    assert st["app"]["version"] == "2.0" and st["trial"] is None
    # The failure was reported by the next call home, which cleared it from the state: the log
    # is where it stays.
    assert st["last_error"] is None
    code, logs, _ = ias(capsys, "logs", str(world.board), "-n", "40")
    staged = logs.index("I callhome: update %s 3.0 staged" % APP)
    failed = logs.index("E app: app failed to start", staged)
    assert logs.index("W ota: rollback: app failed to start", failed) > failed


def test_secrets_are_hidden_and_dates_readable():
    from tools import status

    shown = status.without_secrets(
        {
            "wifi": [{"ssid": "home", "password": "hunter22"}],
            "ap_password": "Vq3dyudyscaa",
            "act_code": "123456",
            "server": "https://example.org",
            "device_name": "kitchen",
        }
    )
    assert shown == {
        "wifi": ["home"],
        "ap_password": "(set)",
        "act_code": "(set)",
        "server": "https://example.org",
        "device_name": "kitchen",
    }
    assert status.when(1764700000) == "2025-12-02 18:26:40 UTC"
    assert status.when(946684800 + 12) == "12s after boot"
    assert status.readable("946684812 I boot: reset cause: power_on") == (
        "12s after boot  I boot: reset cause: power_on"
    )
