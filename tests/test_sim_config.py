"""Config mode on the virtual board, entered the way a user does: hold the mode button 7 s at
power-on, or boot with no Wi-Fi network that can be joined. Served by the unix port."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests import configclient
from tools import cli


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port, path, timeout=30):
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
                return r.status, r.read()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def _boot(board, *extra):
    cmd = [sys.executable, "-m", "tools.cli", "sim", "boot", str(board), "--cycles", "2"]
    return subprocess.Popen(
        list(cmd) + list(extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # _power_off() stops the board's micropython process too
    )


def _power_off(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("how", ["button", "no-wifi"])
def test_config_mode_then_close_then_normal_boot(tmp_path, how):
    port = _free_port()
    board = tmp_path / "dev"
    args = [
        "sim",
        "init",
        str(board),
        "--config-port",
        str(port),
        "--server",
        "https://127.0.0.1:9",
    ]
    if how == "no-wifi":
        args.append("--no-wifi")
    assert cli.main(args) == 0
    proc = _boot(board, "--hold-button", "7") if how == "button" else _boot(board)
    try:
        status, body = _get(port, "/i")
        assert status == 200
        info = json.loads(body)
        assert info["mc"].count(":") == 5 and info["xf"] == "1"  # IASBlink declares one field
        status, body = _get(port, "/app")
        assert json.loads(body)[0]["l"] == "Blink interval (ms)"
        try:
            configclient.request(port, "/close", b"", timeout=5, wait=5)
        except OSError:
            pass  # IAS's /close sends no reply
        if how == "no-wifi":
            time.sleep(1)
            _get(port, "/i")  # still no network: the next boot is config mode again
            _power_off(proc)
        out, _ = proc.communicate(timeout=60)
    finally:
        _power_off(proc)
    if how == "button":
        assert "mode button at power-on: config" in out
        assert out.count("config mode: join") == 1
        assert "halt after 2 main-loop cycles" in out  # after config mode, a normal boot
    else:
        assert "no saved Wi-Fi network could be joined" in out
        assert out.count("config mode: join") == 2


def test_ias_sim_config_serves_until_close(tmp_path):
    port = _free_port()
    board = tmp_path / "dev"
    assert cli.main(["sim", "init", str(board), "--server", "https://127.0.0.1:9"]) == 0
    cmd = [sys.executable, "-m", "tools.cli", "sim", "config", str(board), "--port", str(port)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        status, body = _get(port, "/csr")
        names = [c["n"] for c in json.loads(body)]
        assert status == 200 and "/cert/iasRootCa.cer" in names
        try:
            configclient.request(port, "/close", b"", timeout=5, wait=5)
        except OSError:
            pass
        out, _ = proc.communicate(timeout=60)
    finally:
        _power_off(proc)
    assert proc.returncode == 0, out
    assert "config mode ends (close)" in out
