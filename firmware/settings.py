# The device's configuration, validated on load and on save, stored as /settings.json.
# A missing or corrupt file gives the defaults (with the reason logged); a save that changes
# nothing writes nothing.
import json

from . import fsutil, log
from .reason import ReasonError, const

PATH = "/settings.json"
MAX_NETWORKS = const(3)
MAX_FIELDS = const(16)
MAX_RECOVERY = const(6)

DEFAULTS = {
    "wifi": [],  # up to three {"ssid": ..., "password": ...}, tried in order
    "device_name": "",  # also the access point's name; empty: "ias-" + chip id
    "act_code": "",  # IAS activation code (6 characters)
    # The FACTORY app's name and version (put in slot_a by `ias sim init` or a deploy): used
    # only while the slot pointer has no record of its own; installs never write them.
    "app_name": "",
    "app_version": "",
    # The factory app's MD5 as the host tool recorded it (docs/callhome.md): reported in
    # x-ESP-SKETCH-MD5 until the first update, as IAS always sends the running app's MD5.
    "app_md5": "",
    "fields": {},  # app field values, by field name (declared by the app)
    "server": "https://iotappstory.com",
    "interval": 7200,  # seconds between call homes; 0 turns periodic calls off
    "ap_password": "",  # WPA2 password of the config access point; set at first boot
    "ap_open": False,  # an open access point only when configured so
    "allow_unsigned": False,  # ESP32 only: accept an unsigned payload over verified TLS
    "recovery": [],  # base URLs of signed anchor bundles; empty: the server's /ota/anchors/
    "channel": "",  # URL of a signed static channel.json (second transport)
}


def _text(value, name, most, least=0):
    if not isinstance(value, str):
        raise ReasonError("bad_setting", "%s must be text" % name)
    if not least <= len(value) <= most:
        raise ReasonError("bad_setting", "%s must be %d to %d characters" % (name, least, most))
    if "\x00" in value:
        raise ReasonError("bad_setting", "%s holds a NUL character" % name)
    return value


def _url(value, name):
    _text(value, name, 200)
    if value and not (value.startswith("https://") or value.startswith("http://")):
        raise ReasonError("bad_setting", "%s must start with https:// or http://" % name)
    return value


def validate(data):
    """Return a complete, checked copy of `data` (unknown keys dropped) or raise ReasonError."""
    if not isinstance(data, dict):
        raise ReasonError("bad_setting", "settings must be an object")
    out = {}
    for key, default in DEFAULTS.items():
        out[key] = data.get(key, default)
    nets = out["wifi"]
    if not isinstance(nets, list) or len(nets) > MAX_NETWORKS:
        raise ReasonError(
            "bad_setting", "wifi must be a list of at most %d networks" % MAX_NETWORKS
        )
    clean = []
    for net in nets:
        if not isinstance(net, dict):
            raise ReasonError("bad_setting", "each wifi network must be an object")
        ssid = _text(net.get("ssid", ""), "ssid", 32, 1)
        password = _text(net.get("password", ""), "wifi password", 63)
        if 0 < len(password) < 8:
            raise ReasonError("bad_setting", "a wifi password has 8 to 63 characters")
        clean.append({"ssid": ssid, "password": password})
    out["wifi"] = clean
    _text(out["device_name"], "device_name", 29)
    _text(out["act_code"], "act_code", 6)
    _text(out["app_name"], "app_name", 32)
    _text(out["app_version"], "app_version", 11)
    md5 = _text(out["app_md5"], "app_md5", 32)
    if md5 and (len(md5) != 32 or set(md5) - set("0123456789abcdef")):
        raise ReasonError("bad_setting", "app_md5 must be empty or 32 lower-case hex digits")
    _url(out["server"], "server")
    if not out["server"]:
        raise ReasonError("bad_setting", "server must be set")
    _url(out["channel"], "channel")
    interval = out["interval"]
    if not isinstance(interval, int) or isinstance(interval, bool):
        raise ReasonError("bad_setting", "interval must be a whole number of seconds")
    if interval != 0 and not 60 <= interval <= 30 * 86400:
        raise ReasonError("bad_setting", "interval must be 0 or 60 s to 30 days")
    pw = _text(out["ap_password"], "ap_password", 63)
    if 0 < len(pw) < 8:
        raise ReasonError("bad_setting", "ap_password has 8 to 63 characters")
    for flag in ("ap_open", "allow_unsigned"):
        if not isinstance(out[flag], bool):
            raise ReasonError("bad_setting", "%s must be true or false" % flag)
    rec = out["recovery"]
    if not isinstance(rec, list) or len(rec) > MAX_RECOVERY:
        raise ReasonError(
            "bad_setting", "recovery must be a list of at most %d URLs" % MAX_RECOVERY
        )
    for url in rec:
        _url(url, "recovery URL")
    fields = out["fields"]
    if not isinstance(fields, dict) or len(fields) > MAX_FIELDS:
        raise ReasonError(
            "bad_setting", "fields must be an object of at most %d values" % MAX_FIELDS
        )
    for name, value in fields.items():
        _text(name, "field name", 24, 1)
        _text(value, "field " + name, 256)
    return out


def load(path=PATH):
    """The saved settings, or the defaults when the file is missing or unusable."""
    try:
        with open(path) as f:
            return validate(json.load(f))
    except OSError:
        log.info("settings", "no %s, using defaults" % path)
    except ValueError as e:
        log.warn("settings", "%s unusable (%s), using defaults" % (path, e))
    return validate({})


def save(data, path=PATH):
    """Validate and store; True when the file changed, False when nothing needed writing."""
    clean = validate(data)
    return fsutil.write_atomic(path, json.dumps(clean))
