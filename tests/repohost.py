"""The repository on a local static HTTP server, as `mip install URL/package.json` reads it."""

import functools
import http.server
import shutil
import threading

import pytest

from tools import REPO, mplib, packaging


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        self.server.requests.append(self.path)


@pytest.fixture
def repo_server(tmp_path):
    """The repository as a static host would serve it (firmware/, package.json, root.json),
    plus Microdot's src/ as GitHub serves it at its tag, both on one local HTTP server. Yields
    (base URL, server); server.requests lists the paths asked for."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "firmware").symlink_to(REPO / "firmware", target_is_directory=True)
    src = root / "microdot" / "src" / "microdot"
    src.mkdir(parents=True)
    for name in mplib.MICRODOT_FILES:
        shutil.copy(mplib.microdot_dir() / name, src / name)
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    base = "http://127.0.0.1:%d" % server.server_port
    # The committed files; package.json's Microdot URLs pointed at the local copy of the tag.
    text = (REPO / "package.json").read_text()
    (root / "package.json").write_text(
        text.replace(packaging.MICRODOT_BASE, base + "/microdot/src")
    )
    shutil.copy(REPO / "root.json", root / "root.json")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield base, server
    server.shutdown()
    server.server_close()
