# Entry points of the virtual board other than a normal boot, for `ias sim callhome` and
# `ias sim config`. Imported by launch.py before the flash is mounted; firmware modules are
# imported inside the functions, from the flash.
import json
import sys


def _result(obj):
    print("@@RESULT " + json.dumps(obj))


def run(mode, arg):
    from ias import device

    dev = device.Device.open()
    if mode == "callhome":
        dev.start_network()
        dev.start_app()
        result = dev.call_home(force=True)
        keys = ("outcome", "reason", "detail", "trusted", "app", "status")
        shown = {k: result.get(k) for k in keys}
        _result(shown)
        if result["outcome"] == "updated":
            dev.apply(result)  # switches and resets, as the device does
        sys.exit(0 if result.get("outcome") != "error" else 3)
    elif mode == "config":
        # arg: "PORT" or "HOST:PORT" (ias sim config --bind; the device itself binds 0.0.0.0)
        host, _, port = (arg or "").rpartition(":")
        port = int(port) if port else None
        dev.start_network()
        if host:
            from ias import configmode

            if dev.app is None:
                dev.start_app()
            configmode.run(dev, fields=dev.app.fields, port=port, host=host)
        else:
            dev.config_mode(port=port)
        _result({"outcome": "config-closed"})
    else:
        print("unknown mode %s" % mode)
        sys.exit(2)
