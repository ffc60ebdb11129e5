# A test double of the installer contract (a test's, not the device's: no firmware module uses
# it): the Installer interface (docs/architecture.md) writing an update
# body to /staging/update.bin and recording its size and hashes in /staging/update.json.
# It only stages: activation (unpacking a bundle into a slot, or writing a firmware image)
# belongs to appbundle.py and fwimage.py, so activate() refuses.
import json
import os

from ias import fsutil
from ias.reason import ReasonError

DIR = "/staging"
MARGIN = 8192  # keep some free blocks for littlefs metadata and the state files


def free_bytes(path):
    st = os.statvfs(path)
    return st[0] * st[4]  # f_bsize * f_bavail


class StagingInstaller:
    def __init__(self, folder=DIR, free=None):
        self.folder = folder
        self.free = free or free_bytes  # free(folder) -> bytes; injectable for tests
        self.path = folder + "/update.bin"
        self.meta_path = folder + "/update.json"
        self._part = self.path + ".part"  # renamed to update.bin only when complete
        self._f = None
        self.size = None
        self.written = 0
        self.info = None

    def begin(self, size, name, version):
        fsutil.makedirs(self.folder)
        self._discard()
        free = self.free(self.folder)
        if size + MARGIN > free:
            raise ReasonError("too_large", "%d bytes, %d free" % (size, free))
        self.size = size
        self.info = {"name": name, "version": version, "size": size}
        self.written = 0
        self._f = open(self._part, "wb")

    def write(self, chunk):
        if self._f is None:
            raise ReasonError("not_started")
        if self.written + len(chunk) > self.size:
            raise ReasonError("too_long", "more than the announced %d bytes" % self.size)
        n = self._f.write(chunk)
        if n is not None and n != len(chunk):
            raise ReasonError("io_error", "short write")
        self.written += len(chunk)

    def finish(self, md5_hex, sha256_hex):
        if self._f is None:
            raise ReasonError("not_started")
        self._f.close()
        self._f = None
        if self.written != self.size:
            raise ReasonError("wrong_length", "%d of %d bytes" % (self.written, self.size))
        os.rename(self._part, self.path)
        self.info["md5"] = md5_hex
        self.info["sha256"] = sha256_hex
        fsutil.write_atomic(self.meta_path, json.dumps(self.info))

    def abort(self):
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None
        self._discard()

    def activate(self):
        raise ReasonError(
            "not_supported", "staging only: appbundle.py or fwimage.py activates an update"
        )

    def _discard(self):
        for p in (self._part, self.path, self.meta_path):
            fsutil.remove(p)


def staged(folder=DIR):
    """The record of a completely staged update, or None."""
    try:
        with open(folder + "/update.json") as f:
            info = json.load(f)
        if os.stat(folder + "/update.bin")[6] == info["size"]:
            return info
    except (OSError, ValueError, KeyError):
        pass
    return None
