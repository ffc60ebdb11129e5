# The app slots and their pointer /app.json: the one home of the installed version. The pointer
# says which slot is active and what is installed there (or, for firmware, in the running
# partition); while a new version is on trial it also holds "prev" (what to go back to) and
# "trial" (trial.py owns both).
#
# Pointer: {"active": "slot_a", "kind": "bundle"|"firmware"|"factory", "name", "version",
# "counter", "md5", "size", "id" (a bundle's signed identity, trial.identity())} plus, on trial,
# "prev" (the same fields) and "trial".
#
# Settings app_name/app_version name the FACTORY app (what `ias sim init` or a deploy put in
# slot_a): they are read only when the pointer has no record of its own (no /app.json yet, or a
# rollback to the factory app), and nothing writes them after an install. Settings app_md5 is
# its MD5 as the host tool recorded it, reported while the pointer holds no md5 of its own.
import json
import os

from . import log

SLOTS = ("slot_a", "slot_b")
FIELDS = ("kind", "name", "version", "counter", "md5", "size", "id")


class Slots:
    """The app slots and their pointer under `root` ("" on the device, e.g. "/pc" in tests).
    `factory`: a settings mapping whose app_name/app_version name the factory app (loaded
    from root/settings.json when not given)."""

    def __init__(self, root="", factory=None):
        self.root = root
        self.pointer = root + "/app.json"
        self.staging = root + "/ota.part"
        self.keys_dir = root + "/keys"
        self.settings_path = root + "/settings.json"
        self.factory = factory
        self._info = None

    def read(self):
        if self._info is None:
            info = None
            try:
                with open(self.pointer) as f:
                    info = json.load(f)
            except OSError:
                pass
            except ValueError as e:
                log.warn("ota", "%s unreadable (%s): using slot_a" % (self.pointer, e))
            if not isinstance(info, dict) or info.get("active") not in SLOTS:
                info = {"active": "slot_a", "kind": "factory"}
            self._info = info
        return self._info

    def write(self, info):
        from . import fsutil

        fsutil.write_atomic(self.pointer, json.dumps(info))  # the one atomic switch
        self._info = info

    def forget(self):
        """Read the pointer again from flash at the next use (after a reset in tests)."""
        self._info = None

    def path(self, slot):
        return self.root + "/" + slot

    def active(self):
        return self.read()["active"]

    def inactive(self):
        return SLOTS[1] if self.active() == SLOTS[0] else SLOTS[0]

    def active_app_dir(self):
        """The folder the user's app (app.py) is imported from."""
        return self.path(self.active())

    def trial(self):
        """The trial record while a new version waits for its confirmation, else None."""
        return self.read().get("trial")

    def installed_artifact(self):
        """{"size", "md5", "name", "version", "counter"} of what runs now (also while it is on
        trial): what the call home reports and the config page shows."""
        return self._artifact(self.read())

    def committed(self):
        """The pointer record of the last committed version (what a trial would go back to):
        the pointer itself when nothing is on trial."""
        info = self.read()
        if not info.get("trial"):
            return info
        return info.get("prev") or {"active": info["active"], "kind": "factory"}

    def _artifact(self, rec):
        name, version = rec.get("name"), rec.get("version")
        fname, fversion, fmd5 = self._factory()
        if not name and not version:
            name, version = fname, fversion
        # Only the factory app's pointer lacks an md5 (every install records one): report the
        # MD5 the host tool recorded for it rather than an empty header.
        md5 = rec.get("md5") or fmd5
        return {
            "size": rec.get("size", 0),
            "md5": md5 or "",
            "name": name or "",
            "version": version or "",
            "counter": rec.get("counter", 0),
        }

    def _factory(self):
        f = self.factory
        if f is None:
            try:
                with open(self.settings_path) as fh:
                    f = json.load(fh)
            except (OSError, ValueError):
                f = {}
            if not isinstance(f, dict):
                f = {}
            keep = ("app_name", "app_version", "app_md5")
            self.factory = f = {k: f.get(k) for k in keep}
        return f.get("app_name"), f.get("app_version"), f.get("app_md5")

    def free(self):
        st = os.statvfs(self.root or "/")
        return st[0] * st[3]
