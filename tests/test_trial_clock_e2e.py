"""Design §1 rule 7, end to end: an NTP answer ten years ahead during a trial boot does not cut
the trial short. A virtual ESP8266 (its TLS cannot verify, so nothing there distrusts the
clock) installs a release from `ias serve`; on its trial boot NTP answers ten years ahead and
the first call home is cut by the network. The trial's window counts uptime, not the clock:
the retry a minute later confirms the release, which commits without a rollback."""

import contextlib
import json
import time

import pytest

from tools import demo, keys, pki, sim
from tools.server import UpdateServer

APP = demo.APP
YEAR = 365 * 86400


@contextlib.contextmanager
def esp8266_board(tmp_path):
    """(work folder, update key path, running `ias serve --esp8266`, virtual ESP8266)."""
    key_path, pub_path = keys.write_pair(tmp_path / "keys", bits=2048)
    root = pki.make_ca("Root R", kind="rsa")
    server = UpdateServer(artifacts=tmp_path / "artifacts", esp8266=True)
    server.use_chain(pki.make_leaf(root, kind="rsa"))
    server.start()
    board = tmp_path / "esp8266"
    sim.init(
        sim.args_for(
            "init",
            board,
            chip="esp8266",
            server=server.url,
            app_name=APP,
            update_key=str(pub_path),
            force=True,
        )
    )
    try:
        yield tmp_path, keys.load_private(key_path), server, board
    finally:
        server.stop()


@pytest.fixture
def esp8266(tmp_path):
    with esp8266_board(tmp_path) as b:
        yield b


def _set_ntp(board, answer):
    path = board / "board.json"
    hw = json.loads(path.read_text())
    hw["ntp"] = answer
    path.write_text(json.dumps(hw))


def trial_with_the_clock_ten_years_ahead(esp8266):
    work, key, server, board = esp8266
    demo.publish(work, key, "1.1", 1)
    run = sim.run_board(board, "callhome", echo=False)  # installs, switches and resets
    assert run.result is not None and run.result["outcome"] == "updated", run.output
    ptr = demo.app_pointer(board)
    assert ptr["version"] == "1.1" and ptr["trial"]["boots"] == 0, ptr
    downloads = len([r for r in server.requests if r["path"].startswith("/ota/updates")])

    _set_ntp(board, int(time.time()) + 10 * YEAR)  # the trial boot hears a lie
    server.fault("garbage_headers")  # ... and its first call home is garbled
    demo.boot(board, 150, quiet=True)
    ptr = demo.app_pointer(board)
    log = (board / "console.log").read_text(errors="replace")
    assert ptr["version"] == "1.1" and "trial" not in ptr, (ptr, log[-3000:])
    state = demo.device_state(board)
    assert "rollback" not in log and "ota_error" not in state, log[-3000:]
    assert state.get("refused", []) == []
    # the lie was in force: the device's record of its last call home carries its date
    assert state["last_call"]["since"] > time.time() + 9 * YEAR, state["last_call"]
    calls = [r for r in server.requests if r["path"].startswith("/ota/updates")]
    assert len(calls) == downloads + 2  # the cut call, then the confirming one: no download


# The scenario is also an attack case of the reliability ledger (tests/reliability).
def test_ntp_ten_years_ahead_during_a_trial_does_not_roll_it_back(esp8266):
    trial_with_the_clock_ten_years_ahead(esp8266)
