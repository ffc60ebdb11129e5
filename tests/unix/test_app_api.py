# The app API: IAS-like hooks that never break the client, fields as IAS's addField declares
# them, and download progress reported through the installer.
from ias import app_api, device


class _Board:
    pass


def _app(values=None):
    return app_api.App(_Board(), {"fields": values or {}})


def test_fields_default_then_saved_value_wins():
    app = _app({"colour": "blue"})
    assert app.add_field("colour", "Colour", "red", 8, "L") == "blue"
    assert app.add_field("speed", "Speed", 5, 4, "N") == "5"
    assert app.field("speed") == "5"
    assert [f["type"] for f in app.fields] == ["L", "N"]


def test_fields_are_checked():
    app = _app()
    app.add_field("a", "A")
    for bad in (("a", "again"), ("", "empty"), ("b", "type", "", 8, "Q"), ("x" * 25, "long")):
        try:
            app.add_field(*bad)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % (bad,))


def test_a_failing_hook_is_contained():
    app = _app()
    seen = []
    app.on("no_update", lambda reason: seen.append(reason))
    app.emit("no_update", "Not Modified")
    app.on("update_error", lambda reason: 1 / 0)
    app.emit("update_error", "untrusted")  # logged, not raised
    assert seen == ["Not Modified"]
    try:
        app.on("no_such_event", print)
    except ValueError:
        pass
    else:
        raise AssertionError("unknown event accepted")


class _Installer:
    def __init__(self):
        self.calls = []

    def begin(self, size, name, version):
        self.calls.append("begin")

    def write(self, chunk):
        self.calls.append(len(chunk))

    def finish(self, md5, sha):
        self.calls.append("finish")

    def abort(self):
        self.calls.append("abort")

    def activate(self):
        self.calls.append("activate")


def test_download_progress_every_tenth():
    app = _app()
    events = []
    app.on("download_start", lambda: events.append("start"))
    app.on("download_progress", lambda done, total: events.append((done, total)))
    inner = _Installer()
    rep = device._Reported(inner, app)
    rep.begin(1000, "n", "1")
    for _ in range(100):
        rep.write(b"0123456789")
    rep.finish("m", "s")
    rep.activate()
    progress = [e for e in events if isinstance(e, tuple)]
    assert events[0] == "start"
    assert 9 <= len(progress) <= 11 and progress[-1] == (1000, 1000)
    assert inner.calls[0] == "begin" and inner.calls[-2:] == ["finish", "activate"]
