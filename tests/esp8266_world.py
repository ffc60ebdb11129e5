"""A virtual ESP8266 against `ias serve --esp8266` (RSA key exchange, AES-CBC: what axTLS
speaks), shared by the ESP8266 end-to-end tests. Its TLS cannot verify, so the board ships no
usable anchors for this server: only signed bundles install. `set_ntp` makes its NTP lie."""

import contextlib
import json

from tools import demo, keys, pki, sim
from tools.server import UpdateServer


@contextlib.contextmanager
def esp8266_board(tmp_path, recovery=False):
    """(work folder, update key path, running server, board folder). With `recovery` the server
    serves an anchors folder (work/anchors) that the board knows as its recovery location."""
    key_path, pub_path = keys.write_pair(tmp_path / "keys", bits=2048)
    root = pki.make_ca("Root R", kind="rsa")
    anchors = tmp_path / "anchors" if recovery else None
    if anchors:
        anchors.mkdir()
    server = UpdateServer(artifacts=tmp_path / "artifacts", anchors=anchors, esp8266=True)
    server.use_chain(pki.make_leaf(root, kind="rsa"))
    server.start()
    board = tmp_path / "esp8266"
    sim.init(
        sim.args_for(
            "init",
            board,
            chip="esp8266",
            server=server.url,
            app_name=demo.APP,
            update_key=str(pub_path),
            recovery=[server.url + "/ota/anchors/"] if recovery else [],
            force=True,
        )
    )
    try:
        yield tmp_path, key_path, server, board
    finally:
        server.stop()


def set_ntp(board, answer):
    """Every later boot of `board` hears `answer` (seconds since the epoch) from NTP."""
    path = board / "board.json"
    hw = json.loads(path.read_text())
    hw["ntp"] = answer
    path.write_text(json.dumps(hw))
