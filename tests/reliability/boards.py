"""The shared setup of the board-level suites: an update key, a CA chain the boards trust, `ias
serve` with a signed v1.1, a hostile TLS server on the same chain, and one virtual ESP32 for
each, snapshotted after init."""

from pathlib import Path

from tests.reliability import rig
from tests.reliability.hostile import HostileServer
from tools import keys, pki
from tools.server import UpdateServer


class Lab:
    def __init__(self, work):
        self.work = Path(work)
        self.key = keys.new_key(bits=2048)
        self.pub = self.work / "update.pub"
        self.pub.write_bytes(keys.public_pem(self.key))
        self.root = pki.make_ca("Reliability Root", org="Lab")
        self.inter = pki.make_ca("Reliability Intermediate", org="Lab", issuer=self.root)
        self.leaf = pki.make_leaf(self.inter)
        self.root_pem = self.work / "root.pem"
        self.root_pem.write_bytes(self.root.pem)
        self.artifacts = self.work / "artifacts"
        self.bundle = rig.publish(self.artifacts, self.work, self.key, "1.1", 1)
        self.server = UpdateServer(artifacts=self.artifacts, plain_port=0)
        self.server.use_chain(self.leaf, [self.inter])
        self.server.start()
        self.hostile = HostileServer(self.leaf, [self.inter])
        self.hostile.start()
        self._boards = {}

    def board(self, name, server):
        """A snapshotted board calling `server`, made once per lab."""
        if name not in self._boards:
            b = rig.init_board(self.work / name, server, [self.root_pem], self.pub)
            b.snapshot()
            self._boards[name] = b
        b = self._boards[name]
        b.restore()
        return b

    def serve_board(self):
        return self.board("serve", "https://127.0.0.1:%d" % self.server.port)

    def hostile_board(self):
        return self.board("hostile", "https://127.0.0.1:%d" % self.hostile.port)

    def stop(self):
        self.server.stop()
        self.hostile.stop()
