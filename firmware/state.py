# Small persistent facts the client keeps between boots, in /state.json: the pending trial of
# an update, boot attempts, backoff, anti-rollback counters, the time floor, the last error.
# Written only when something changed.
import json

from . import fsutil, log

PATH = "/state.json"


class State:
    def __init__(self, path=PATH):
        self.path = path
        self.data = {}
        try:
            with open(path) as f:
                data = json.load(f)
            if isinstance(data, dict):
                self.data = data
            else:
                log.warn("state", "%s is not an object; starting afresh" % path)
        except OSError:
            pass
        except ValueError as e:
            log.warn("state", "%s unreadable (%s); starting afresh" % (path, e))

    def get(self, key, default=None):
        return self.data.get(key, default)

    def set(self, key, value):
        """Set and persist at once; no write when the value is unchanged."""
        if self.data.get(key, _MISSING) == value:
            return False
        self.data[key] = value
        return self.save()

    def update(self, values):
        changed = False
        for key, value in values.items():
            if self.data.get(key, _MISSING) != value:
                self.data[key] = value
                changed = True
        return self.save() if changed else False

    def drop(self, key):
        if key in self.data:
            del self.data[key]
            return self.save()
        return False

    def save(self):
        return fsutil.write_atomic(self.path, json.dumps(self.data))


_MISSING = object()
