# The user's application runs beside the client. Its module (app.py in the active app slot)
# may define setup(ias) and loop(ias); `ias` is an App, with hooks mirroring the IAS library's
# callbacks and fields declared like IAS's addField.
import json

import fsutil
import log

FIELDS_PATH = "/fields.json"  # the app's declared fields, for config mode before the app runs

EVENTS = (
    "update_check",  # before each call home
    "download_start",
    "download_progress",  # (done, total)
    "update_success",
    "update_error",  # (reason)
    "no_update",  # (reason phrase)
    "config_mode",
    "button_short",
    "button_long",
    "button_very_long",
)

# IAS field types: text line, text area, number, checkbox, select, interval, pin, time zone.
FIELD_TYPES = "LTNCSIPZ"


class App:
    def __init__(self, board, settings):
        self.board = board
        self.settings = settings
        self.fields = []
        self._hooks = {}
        self.module = None

    def on(self, event, fn):
        if event not in EVENTS:
            raise ValueError("unknown event %s" % event)
        self._hooks[event] = fn

    def emit(self, event, *args):
        fn = self._hooks.get(event)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception as e:  # a broken hook must not stop updates
            log.exc("app", "hook %s failed" % event, e)

    def add_field(self, name, label, default="", max_len=32, kind="L"):
        """Declare a setting the user edits in config mode; returns its current value."""
        if kind not in FIELD_TYPES or len(kind) != 1:
            raise ValueError("field type must be one of %s" % FIELD_TYPES)
        if not name or len(name) > 24:
            raise ValueError("field name must be 1 to 24 characters")
        for f in self.fields:
            if f["name"] == name:
                raise ValueError("field %s declared twice" % name)
        self.fields.append(
            {"name": name, "label": label, "default": str(default), "max": max_len, "type": kind}
        )
        return self.field(name)

    def field(self, name):
        value = self.settings["fields"].get(name)
        if value is not None:
            return value
        for f in self.fields:
            if f["name"] == name:
                return f["default"]
        raise KeyError(name)

    def start(self, module, fields_path=FIELDS_PATH):
        """Run the app's setup(); raises what the app raised (the caller decides on rollback).
        The declared fields are kept on flash (written only when they change)."""
        self.module = module
        if hasattr(module, "setup"):
            module.setup(self)
        fsutil.write_atomic(fields_path, json.dumps(self.fields))

    def tick(self):
        if self.module is not None and hasattr(self.module, "loop"):
            self.module.loop(self)


def load_fields(path=FIELDS_PATH):
    """The fields the installed app declared when it last ran ([] when unknown)."""
    try:
        with open(path) as f:
            fields = json.load(f)
    except (OSError, ValueError):
        return []
    return fields if isinstance(fields, list) else []
