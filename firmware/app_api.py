# The user's application runs beside the client. Its module (app.py in the active app slot)
# may define setup(ias) and loop(ias); `ias` is an App, with hooks mirroring the IAS library's
# callbacks and fields declared like IAS's addField.
from . import log

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
    def __init__(self, board, settings, installed=None):
        self.board = board
        self.settings = settings
        installed = installed or {}
        # What is running, also on trial: the slot pointer's record (slots.installed_artifact).
        self.name = installed.get("name", "")
        self.version = installed.get("version", "")
        self.fields = []
        self._hooks = {}
        self.module = None
        self.client = None  # an asyncio app's main(ias) gets the client's task here (aio.py)

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

    def start(self, module):
        """Run the app's setup(); raises what the app raised (the caller decides on rollback)."""
        self.module = module
        if hasattr(module, "setup"):
            module.setup(self)

    def tick(self):
        if self.module is not None and hasattr(self.module, "loop"):
            self.module.loop(self)
