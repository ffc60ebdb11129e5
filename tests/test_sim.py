"""The virtual board end to end: init deploys into littlefs, boot reaches the main loop."""

import json

import pytest

from tools import cli


def ias(*argv):
    return cli.main(list(argv))


@pytest.fixture(scope="module")
def board_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vboard") / "dev"
    assert ias("sim", "init", str(d), "--server", "https://127.0.0.1:9") == 0
    return d


def test_init_deploys_firmware_into_the_flash_image(board_dir, capsys):
    capsys.readouterr()
    assert ias("sim", "ls", str(board_dir)) == 0
    listing = capsys.readouterr().out
    for name in ("boot.py", "main.py", "settings.json", "iasRootCa.cer", "device.mpy", "app.py"):
        assert name in listing, name
    # The firmware is inside the image, not on the host filesystem.
    assert not (board_dir / "main.py").exists()
    assert ias("sim", "cat", str(board_dir), "/settings.json") == 0
    settings = json.loads(capsys.readouterr().out)
    assert settings["server"] == "https://127.0.0.1:9"


def test_boot_reaches_main_loop_and_halts_after_n_cycles(board_dir, capsys):
    capsys.readouterr()
    assert ias("sim", "boot", str(board_dir), "--cycles", "3") == 0
    out = capsys.readouterr().out
    assert "main loop" in out
    assert "IASBlink 1.0 started" in out
    assert "halt after 3 main-loop cycles" in out
    assert "main loop" in (board_dir / "console.log").read_text()


def test_init_refuses_to_overwrite_a_board(board_dir):
    with pytest.raises(SystemExit):
        ias("sim", "init", str(board_dir))
