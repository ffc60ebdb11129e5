"""`ias deploy`: the mpy-cross build, and real deploys to a pty board (unix port on littlefs)."""

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from ptydevice import MICROPYTHON, PtyDevice, list_image

from tools import cli, deploy, repl
from tools.progress import Progress

ROOT = Path(deploy.ROOT)


def test_check_compile_passes_on_the_firmware():
    proc = subprocess.run(
        [sys.executable, "-m", "tools.deploy", "--check-compile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mpy-cross ok (esp32)" in proc.stdout and "mpy-cross ok (esp8266)" in proc.stdout


def test_compile_error_names_the_file(tmp_path):
    src = tmp_path / "fw"
    src.mkdir()
    (src / "good.py").write_text("X = 1\n")
    (src / "broken.py").write_text("def f(:\n    pass\n")
    with pytest.raises(deploy.BuildError) as e:
        deploy.compile_firmware(tmp_path / "out", src=str(src))
    assert "broken.py" in str(e.value) and "SyntaxError" in str(e.value)


def test_layout_targets_and_build_time(tmp_path):
    out = tmp_path / "esp32"
    files = deploy.compile_firmware(out, build_time=1234567890, target="esp32")
    assert "/boot.py" in files and "/main.py" in files
    assert (out / "boot.py").read_bytes() == (ROOT / "firmware" / "boot.py").read_bytes()
    assert "/lib/ias/board.mpy" in files and "/lib/ias/board_esp32.mpy" in files
    for host_only in (
        "/lib/ias/board_unix.mpy",
        "/lib/ias/vpartition.mpy",
        "/lib/ias/board_esp8266.mpy",
    ):
        assert host_only not in files
    assert not list(out.glob("lib/*.py"))
    unix = deploy.compile_firmware(tmp_path / "unix", build_time=1, target="unix")
    assert "/lib/ias/board_unix.mpy" in unix
    # The compiled board module carries the build time we asked for.
    code = "import sys\nsys.path.insert(0, %r)\nfrom ias import board\nprint(board.BUILD_TIME)"
    proc = subprocess.run(
        [MICROPYTHON, "-c", code % str(out / "lib")], capture_output=True, text=True, timeout=30
    )
    assert proc.stdout.strip() == "1234567890", proc.stderr


def test_set_build_time_needs_the_line():
    assert deploy.set_build_time("A = 1\nBUILD_TIME = 5\n", 77) == "A = 1\nBUILD_TIME = 77\n"
    with pytest.raises(deploy.BuildError):
        deploy.set_build_time("A = 1\n", 77)


def _public_key(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = tmp_path / "update.key"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub = tmp_path / "update.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pub, priv


def _settings(tmp_path, name="bench1"):
    path = tmp_path / ("settings-%s.json" % name)
    data = {"wifi": [{"ssid": "lab", "password": "secret123"}], "device_name": name}
    path.write_text(json.dumps(data))
    return path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deploy_to_a_board_then_redeploy_skips(tmp_path):
    pub, _priv = _public_key(tmp_path)
    settings = _settings(tmp_path)
    image = tmp_path / "flash.img"
    out = io.StringIO()
    with PtyDevice(image) as dev:
        first = deploy.deploy_to(
            dev.port, settings=str(settings), update_key=str(pub), stream=out, build_time=1000
        )
        assert first["target"] == "unix" and first["skipped"] == []
        second = deploy.deploy_to(
            dev.port, settings=str(settings), update_key=str(pub), stream=out, build_time=1000
        )
        assert second["copied"] == [] and sorted(second["skipped"]) == sorted(first["copied"])
        # A changed settings file is the only thing copied next time.
        third = deploy.deploy_to(
            dev.port,
            settings=str(_settings(tmp_path, "bench2")),
            update_key=str(pub),
            stream=out,
            build_time=1000,
        )
        assert third["copied"] == ["/settings.json"]
        assert dev.alive()
    assert "0 copied (0 bytes), %d unchanged" % len(first["copied"]) in out.getvalue()
    # one line per step before the copy's progress: what it does, never silence
    steps = out.getvalue().splitlines()[:3]
    assert steps[0] == "connecting to %s (up to 10 s) ..." % dev.port
    assert re.fullmatch(
        r"MicroPython 1\.\d+\.\d+ on unix; building the client for it \.\.\.", steps[1]
    )
    assert steps[2] == "comparing %d files with the board ..." % len(first["copied"])

    files = list_image(image)
    assert set(files) == set(first["copied"])  # nothing else, no temp files left behind
    anchors = sorted((ROOT / "firmware" / "cert").glob("*.cer"))
    for cer in anchors:
        assert files["/cert/" + cer.name][1] == _sha(cer)
    assert files["/keys/update.pub"][1] == _sha(pub)
    assert files["/boot.py"][1] == _sha(ROOT / "firmware" / "boot.py")
    assert "/lib/microdot/microdot.mpy" in files and "/lib/ias/settings.mpy" in files
    # The settings landed complete (defaults filled in by firmware/settings.py's validate).
    expect = deploy.load_settings(str(_settings(tmp_path, "bench2")))
    compact = json.dumps(expect, separators=(",", ":")).encode()
    assert files["/settings.json"][1] == hashlib.sha256(compact).hexdigest()
    assert expect["device_name"] == "bench2" and expect["interval"] == 7200


def test_corrupted_copy_fails_verification(tmp_path, monkeypatch):
    real = repl.Board.write_file

    def flaky(self, dest, data, progress=None):
        if dest == "/lib/ias/log.mpy":
            data = data[:-1] + bytes([data[-1] ^ 0xFF])  # one bit pattern lost on the wire
        return real(self, dest, data, progress)

    monkeypatch.setattr(repl.Board, "write_file", flaky)
    with PtyDevice(tmp_path / "flash.img") as dev:
        with pytest.raises(repl.DeployError, match="verification failed.*/lib/ias/log.mpy"):
            deploy.deploy_to(dev.port, stream=io.StringIO(), build_time=1000)


def test_mpremote_cli_drives_the_pty_board(tmp_path):
    # The fake board is a board for mpremote itself too: soft reset, fs cp, exec.
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello from the host\n" * 50)
    mpremote = str(ROOT / ".venv" / "bin" / "mpremote")
    with PtyDevice(tmp_path / "flash.img") as dev:
        proc = subprocess.run(
            [mpremote, "connect", dev.port, "fs", "cp", str(src), ":hello.txt", "+", "exec",
             "import os; print(os.stat('/hello.txt')[6])"],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == "1000"
    assert list_image(tmp_path / "flash.img")["/hello.txt"] == (1000, _sha(src))


def test_refuses_private_key_and_bad_settings(tmp_path):
    pub, priv = _public_key(tmp_path)
    with pytest.raises(deploy.BuildError, match="PRIVATE key"):
        deploy.check_update_key(str(priv))
    deploy.check_update_key(str(pub))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"interval": "often"}))
    with pytest.raises(deploy.BuildError, match="interval"):
        deploy.load_settings(str(bad))
    notcert = tmp_path / "anchors"
    notcert.mkdir()
    (notcert / "x.cer").write_text("not a certificate")
    with pytest.raises(deploy.BuildError, match="not a certificate"):
        deploy.stage_tree(str(tmp_path / "out"), "esp32", anchors=str(notcert))


def test_missing_port_is_one_line(capsys):
    assert cli.main(["deploy", "--port", "/dev/ttyNOPE9"]) == 1
    err = capsys.readouterr().err
    assert err == "ias deploy: error: no such serial port: /dev/ttyNOPE9\n"


@pytest.mark.parametrize(
    "argv, words",
    [
        ([], ["flash", "deploy", "COMMAND"]),
        (["flash"], ["Erase a board", "ESP32_GENERIC", "0x1000", "examples:", "--no-deploy"]),
        (["deploy"], ["Compile firmware/", "/keys/update.pub", "examples:", "--update-key"]),
    ],
)
def test_help(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv + ["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for w in words:
        assert w in text


def test_progress_prints_one_line_when_not_a_tty():
    out = io.StringIO()
    with Progress(3000, "deploy", stream=out) as bar:
        for _ in range(3):
            bar.update(1000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "100%" in lines[0] and "2.9 KiB/2.9 KiB" in lines[0]
    live = io.StringIO()
    bar = Progress(10, "x", stream=live, unit="files", live=True)
    bar.update(5)
    assert live.getvalue().startswith("\rx [###############---------------]  50% 5/10 files")


def test_board_error_is_the_last_line(tmp_path):
    with PtyDevice(tmp_path / "flash.img") as dev:
        board = repl.Board(dev.port)
        try:
            with pytest.raises(repl.DeployError) as e:
                board.exec("open('/no/such/file')")
            assert str(e.value).startswith("board error: OSError")
            assert board.platform() == "linux"  # the REPL still answers afterwards
        finally:
            board.close()


def test_deploy_refuses_a_micropython_older_than_1_23_in_one_line(tmp_path, capsys):
    image = tmp_path / "flash.img"
    with PtyDevice(image, version="1.22.2") as dev:
        assert cli.main(["deploy", "--port", dev.port, "--no-reset"]) == 1
        err = capsys.readouterr().err
        assert err == (
            "connecting to %s (up to 10 s) ...\n"
            "ias deploy: error: the board runs MicroPython 1.22.2; the client needs 1.23 or "
            "newer (see `ias flash`)\n" % dev.port
        )
        board = repl.Board(dev.port)
        try:
            assert board.version() == (1, 22, 2)
        finally:
            board.close()
    assert list_image(image) == {}  # nothing was copied
    with PtyDevice(tmp_path / "new.img") as dev:  # the unix port we run reports its own
        board = repl.Board(dev.port)
        try:
            assert board.version() >= (1, 23)
        finally:
            board.close()
    deploy.check_version((1, 23, 0))
    with pytest.raises(deploy.BuildError, match="MicroPython unknown"):
        deploy.check_version(())


def test_app_is_staged_as_the_factory_app_with_its_md5(tmp_path):
    # `ias deploy --app`: the app goes to /slot_a and its MD5 into settings app_md5, which the
    # device reports in x-ESP-SKETCH-MD5 until its first update (issue 17 item 7).
    from tools import REPO, bundle

    app = REPO / "examples" / "blink"
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"app_name": "Blink", "app_version": "1.0"}))
    with pytest.raises(deploy.BuildError, match="--settings"):
        deploy.stage_tree(str(tmp_path / "none"), "esp32", app=str(app))
    tree = deploy.stage_tree(str(tmp_path / "out"), "esp32", settings=str(settings), app=str(app))
    names = [name for name, _ in bundle.collect(app)]
    assert {"/slot_a/" + n for n in names} | {"/app.json"} <= set(tree)
    for n in names:
        assert open(tree["/slot_a/" + n], "rb").read() == (app / n).read_bytes()
    assert json.loads(open(tree["/app.json"]).read()) == {"active": "slot_a", "kind": "factory"}
    saved = json.loads(open(tree["/settings.json"]).read())
    assert saved["app_md5"] == bundle.app_md5(app) and len(saved["app_md5"]) == 32
    # The MD5 follows the app's content, not file times or tar metadata.
    copy = tmp_path / "copy"
    shutil.copytree(app, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert bundle.app_md5(copy) == saved["app_md5"]
    (copy / "app.py").write_bytes((copy / "app.py").read_bytes() + b"\n")
    assert bundle.app_md5(copy) != saved["app_md5"]


def test_deploy_romfs_leaves_the_client_out_of_the_filesystem_and_needs_a_romfs_board(
    tmp_path, capsys
):
    # The pty board is the unix port: no ROMFS partition (vfs.rom_ioctl), as an official
    # ESP32_GENERIC build. Everything but the client is deployed (an earlier .mpy copy of the
    # client is removed, so it cannot shadow /rom/lib), then one line says why the image could
    # not be written; the image itself is built for the board's port.
    image = tmp_path / "flash.img"
    with PtyDevice(image) as dev:
        deploy.deploy_to(dev.port, stream=io.StringIO(), build_time=1000)
        assert "/lib/ias/device.mpy" in list_image(image)
        code = cli.main(["deploy", "--port", dev.port, "--romfs", "--no-reset"])
        assert dev.alive()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("ias deploy: error: mpremote romfs deploy failed on %s" % dev.port)
    assert "FLASH_2M_ROMFS" in err[-1]
    files = list_image(image)
    assert "/boot.py" in files and "/cert/iasRootCa.cer" in files
    assert not any(p.startswith(("/lib/ias/", "/lib/microdot/")) for p in files), files
