"""Every expected failure of the `ias` command line is one line that says what to do, with no
traceback, and leaves nothing half made on disk (issue 18 item 3). The commands run as a user
runs them: `.venv/bin/ias` (or `python -m tools.cli`) in a process of its own."""

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tools import REPO

IAS = [sys.executable, "-m", "tools.cli"]


def ias(*args, timeout=120):
    return subprocess.run(
        IAS + [str(a) for a in args], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def one_line(text):
    assert "Traceback" not in text
    assert text.count("\n") == 1 and text.endswith("\n"), text
    return text.strip()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    assert ias("keys", "new", folder).returncode == 0
    return folder


@pytest.fixture(scope="module")
def board(tmp_path_factory, keys):
    folder = tmp_path_factory.mktemp("board") / "dev"
    proc = ias("sim", "init", folder, "--update-key", keys / "update.pub")
    assert proc.returncode == 0, proc.stderr
    return folder


# -- ias sim init: checked before anything is written -----------------------------------------


def test_sim_init_refuses_a_private_key_as_update_key(tmp_path, keys):
    folder = tmp_path / "dev"
    proc = ias("sim", "init", folder, "--update-key", keys / "update.key")
    assert proc.returncode == 1
    assert one_line(proc.stderr) == (
        "ias sim init: --update-key %s is a PRIVATE key: give its public half (%s); "
        "nothing written" % (keys / "update.key", keys / "update.pub")
    )
    assert not folder.exists()


def test_sim_init_refuses_a_garbage_anchor(tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    folder = tmp_path / "dev"
    folder.mkdir()  # an existing, empty folder stays empty
    proc = ias("sim", "init", folder, "--anchor", garbage)
    assert proc.returncode == 1
    assert one_line(proc.stderr) == (
        "ias sim init: --anchor %s is not a certificate (give a CA's PEM or DER file); "
        "nothing written" % garbage
    )
    assert list(folder.iterdir()) == []


def test_sim_init_refuses_a_private_key_as_anchor(tmp_path, keys):
    proc = ias("sim", "init", tmp_path / "dev", "--anchor", keys / "update.key")
    assert proc.returncode == 1
    assert "is not a certificate" in one_line(proc.stderr)
    assert not (tmp_path / "dev").exists()


def test_sim_init_refuses_a_missing_anchor_and_leaves_no_board(tmp_path):
    folder = tmp_path / "dev"
    proc = ias("sim", "init", folder, "--anchor", tmp_path / "nothere.pem")
    assert proc.returncode == 1
    assert one_line(proc.stderr) == (
        "ias sim init: --anchor %s: no such file; nothing written" % (tmp_path / "nothere.pem")
    )
    assert not folder.exists()
    # and the folder is not "a board already": a good init goes through
    boot = ias("sim", "boot", folder)
    assert boot.returncode == 1
    assert "no virtual board in" in one_line(boot.stderr)


def test_sim_init_refuses_a_certificate_as_update_key(tmp_path):
    cert = REPO / "firmware" / "cert" / "iasRootCa.cer"
    proc = ias("sim", "init", tmp_path / "dev", "--update-key", cert)
    assert proc.returncode == 1
    assert one_line(proc.stderr) == (
        "ias sim init: --update-key %s is not a PEM public key (see `ias keys new`); "
        "nothing written" % cert
    )
    assert not (tmp_path / "dev").exists()


# -- ias sim cat / ls --------------------------------------------------------------------------


def test_sim_cat_of_a_missing_file_is_one_line(board):
    proc = ias("sim", "cat", board, "nothere.txt")
    assert proc.returncode == 1 and proc.stdout == ""
    assert one_line(proc.stderr) == (
        "ias sim cat: no nothere.txt on the board's flash; see `ias sim ls %s`" % board
    )
    proc = ias("sim", "cat", board, "/lib")
    assert one_line(proc.stderr) == (
        "ias sim cat: /lib is a folder: list it with `ias sim ls %s /lib`" % board
    )
    proc = ias("sim", "ls", board, "/nope")
    assert proc.returncode == 1
    assert one_line(proc.stderr) == (
        "ias sim ls: no /nope on the board's flash; see `ias sim ls %s`" % board
    )
    # the good path still works
    assert "BEGIN PUBLIC KEY" in ias("sim", "cat", board, "/keys/update.pub").stdout


# -- Ctrl-C and SIGTERM ------------------------------------------------------------------------


def _flash_files(board):
    listing = ias("sim", "ls", board)
    assert listing.returncode == 0, listing.stderr
    return listing.stdout


def test_ctrl_c_during_sim_boot_stops_the_board_cleanly(board):
    # As a terminal does: SIGINT to the whole foreground process group, while the board runs
    # its loop (calling home, failing, writing its state) for as long as it is left alone.
    proc = subprocess.Popen(
        IAS + ["sim", "boot", str(board), "--cycles", "100000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        time.sleep(4)
        assert proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert "--- boot 1 (power_on) ---" in out
    assert "Traceback" not in out and "stopped at its REPL" not in out
    line = one_line(err)
    assert re.fullmatch(
        r"ias sim boot: stopped: the board in %s is off( \(\d+ cut writes dropped\))?; "
        r"`ias sim boot %s` powers it on" % (re.escape(str(board)), re.escape(str(board))),
        line,
    ), line
    assert ".tmp" not in _flash_files(board)
    assert not [p for p in Path(board).iterdir() if p.name.endswith(".tmp")]
    # the board boots again from that flash
    again = ias("sim", "boot", board, "--cycles", "1", "--quiet")
    assert again.returncode == 0, again.stdout + again.stderr


_PUT = """import os, sys, vfs
from nor import BLOCK, NorFlash
folder, path = sys.argv[1], sys.argv[2]
dev = NorFlash(os.stat(folder + "/flash.bin")[6] // BLOCK, path=folder + "/flash.bin")
vfs.mount(vfs.VfsLfs2(dev), "/flash")
with open("/flash" + path, "wb") as f:
    f.write(b"half a write")
vfs.umount("/flash")
dev.file.close()
"""


def test_a_stopped_board_keeps_no_temp_file_of_a_cut_write(board, tmp_path):
    # What a Ctrl-C in the middle of fsutil.write_atomic leaves (the temp file, not yet renamed),
    # made on purpose: stop_board() drops it, the file it was to replace is untouched.
    from tools import VBOARD, sim

    script = tmp_path / "put.py"
    script.write_text(_PUT)
    before = ias("sim", "cat", board, "/settings.json").stdout
    env = dict(os.environ, MICROPYPATH=str(VBOARD))
    for path in ("/settings.json.tmp", "/cert/new.cer.tmp"):
        subprocess.run([sim.micropython(), str(script), str(board), path], env=env, check=True)
    assert _flash_files(board).count(".tmp") == 2
    assert sorted(sim.stop_board(board)) == ["/cert/new.cer.tmp", "/settings.json.tmp"]
    assert ".tmp" not in _flash_files(board)
    assert ias("sim", "cat", board, "/settings.json").stdout == before


def _listening(port):
    """The local addresses listening on TCP `port`, from /proc/net/tcp (state 0A: LISTEN)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":
            found.append(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def _wait_page(port, timeout=60):
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/i" % port, timeout=5) as r:
                return r.status
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def _children(pid):
    try:
        text = Path("/proc/%d/task/%d/children" % (pid, pid)).read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path("/proc/%d/stat" % pid).read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sim_config_binds_localhost_and_a_signal_ends_its_board(board, sig):
    port = _free_port()
    proc = subprocess.Popen(
        IAS + ["sim", "config", str(board), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        assert _wait_page(port) == 200
        assert _listening(port) == ["127.0.0.1"]
        children = _children(proc.pid)
        assert children, "the board runs as a child process"
        if sig == signal.SIGTERM:
            proc.send_signal(sig)  # e.g. systemd or `kill`: the host process only
        else:
            os.killpg(proc.pid, sig)  # Ctrl-C at the terminal
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert one_line(err) == "ias sim config: stopped: the board in %s is off" % board
    assert "Traceback" not in out
    deadline = time.monotonic() + 5
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(c) for c in children), "the board's micropython still runs"
    assert _listening(port) == []


def test_sim_config_refuses_a_busy_port_in_one_line(board):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = ias("sim", "config", board, "--port", port)
    assert proc.returncode == 1 and proc.stdout == ""
    assert one_line(proc.stderr) == (
        "ias sim config: port %d on 127.0.0.1 is busy (another program listens there): "
        "choose another with --port" % port
    )


def test_sim_config_help_says_where_it_listens():
    out = ias("sim", "config", "--help").stdout
    assert "127.0.0.1" in out and "--bind" in out


# -- ias deploy --------------------------------------------------------------------------------


def test_deploy_to_a_port_where_nothing_answers_ends_in_one_line(tmp_path):
    master, slave = os.openpty()  # a serial port with nothing on the other end
    port = os.ttyname(slave)
    try:
        t0 = time.monotonic()
        proc = ias("deploy", "--port", port, "--connect-timeout", "2", timeout=60)
        took = time.monotonic() - t0
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 1
    assert took < 15
    assert proc.stderr == (
        "connecting to %s (up to 2 s) ...\n"
        "ias deploy: error: nothing answered on %s within 2 s: is a MicroPython board there "
        "and no other program (a serial monitor) using it? Press its reset button and try "
        "again\n" % (port, port)
    )


def test_deploy_refuses_a_private_update_key_before_connecting(tmp_path, keys):
    master, slave = os.openpty()
    try:
        t0 = time.monotonic()
        proc = ias("deploy", "--port", os.ttyname(slave), "--update-key", keys / "update.key")
        took = time.monotonic() - t0
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 1
    assert one_line(proc.stderr) == (
        "ias deploy: error: %s is a PRIVATE key: pass the public half (.pub)"
        % (keys / "update.key")
    )
    assert took < 10  # no connection attempt (that alone would take 10 s here)


# -- ias serve ---------------------------------------------------------------------------------


def _serve(*args):
    proc = subprocess.Popen(
        IAS + ["serve"] + [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    proc.lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            proc.lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return proc


def _readline(proc, timeout=30):
    try:
        return proc.lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("ias serve printed nothing for %d s" % timeout) from None


def test_serve_warns_of_a_missing_artifacts_folder_and_logs_each_request(tmp_path):
    import ssl

    port = _free_port()
    missing = tmp_path / "artifacts"
    proc = _serve("--port", port, "--artifacts", missing, "--root-out", tmp_path / "root.pem")
    try:
        assert _readline(proc) == (
            "ias serve: warning: the artifacts folder %s does not exist (yet): every device "
            "gets 404 until it holds APP/current.json and the bundle\n" % missing
        )
        assert _readline(proc) == "ias serve: https://127.0.0.1:%d\n" % port
        assert _readline(proc).startswith("ias serve: root certificate written to")
        ctx = ssl.create_default_context(cafile=str(tmp_path / "root.pem"))
        req = urllib.request.Request(
            "https://127.0.0.1:%d/ota/updates?x=1" % port,
            headers={"x-ESP-VERSION": "IASBlink v1.0"},
        )
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(req, context=ctx, timeout=10)
        line = _readline(proc)
        assert re.fullmatch(
            r"ias serve: \d\d:\d\d:\d\d 127\.0\.0\.1 GET /ota/updates \(IASBlink v1\.0\) "
            r"-> 404 No update assigned to this app\n",
            line,
        ), line
        # and with a taken port, the second server names it
        busy = ias("serve", "--port", port)
        assert busy.returncode == 1 and busy.stdout == ""
        assert one_line(busy.stderr) == (
            "ias serve: port %d on 127.0.0.1 is busy (another server listens there): choose "
            "another with --port" % port
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not missing.exists()  # a warning, not a folder made up


# -- ias bundle build --------------------------------------------------------------------------


def test_bundle_build_creates_its_output_folder(tmp_path, keys):
    out = tmp_path / "artifacts" / "IASBlink" / "IASBlink-1.1.tar"
    proc = ias(
        "bundle", "build", REPO / "examples" / "blink", "--key", keys / "update.key",
        "--name", "IASBlink", "--version", "1.1", "-o", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def test_bundle_version_rule_says_why(tmp_path, keys):
    out = tmp_path / "out" / "b.tar"
    proc = ias(
        "bundle", "build", REPO / "examples" / "blink", "--key", keys / "update.key",
        "--name", "IASBlink", "--version", "1.2.3-beta.45", "-o", out,
    )  # fmt: skip
    assert proc.returncode == 2
    assert one_line(proc.stderr) == (
        "ias bundle: error: --version '1.2.3-beta.45' has 13 characters: 1 to 11, because IAS "
        "keeps 11 characters of a version (x-ver, the device's app_version); e.g. 1.10.2"
    )
    assert not (tmp_path / "out").exists()


def test_bundle_build_with_the_public_key_or_no_key_file_is_one_line(tmp_path, keys):
    out = tmp_path / "out" / "b.tar"
    blink = REPO / "examples" / "blink"
    proc = ias("bundle", "build", blink, "--key", keys / "update.pub", "--name", "IASBlink",
               "--version", "1.1", "-o", out)  # fmt: skip
    assert proc.returncode == 2
    assert one_line(proc.stderr) == (
        "ias bundle: error: --key %s is not an RSA private key: give the operator's update.key "
        "from `ias keys new` (the .pub goes to devices)" % (keys / "update.pub")
    )
    proc = ias("publish", blink, "--key", tmp_path / "nokey", "--name", "IASBlink",
               "--version", "1.1", "-o", tmp_path / "site")  # fmt: skip
    assert one_line(proc.stderr) == "ias publish: error: no such file: %s" % (tmp_path / "nokey")
    assert not (tmp_path / "out").exists() and not (tmp_path / "site").exists()


def test_sim_init_that_fails_half_way_keeps_nothing_it_wrote(tmp_path):
    folder = tmp_path / "dev"
    folder.mkdir()
    (folder / "mine.txt").write_text("the user's")
    proc = ias("sim", "init", folder, "--flash-kib", "16")
    assert proc.returncode == 1
    assert one_line(proc.stderr) == (
        "ias sim init: the firmware does not fit in 16 KiB of flash: give a larger --flash-kib "
        "(default 2048); nothing kept"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["mine.txt"]
