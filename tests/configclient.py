"""What the config page does for a change, from a plain HTTP client: read the session's token
(GET /token, same origin), then POST with the page's Origin and the token (docs/configmode.md)."""

import json
import time
import urllib.error
import urllib.request


def request(port, path, data=None, timeout=30, wait=60):
    """GET `path`, or POST `data` as the page would; retried while config mode is not yet
    listening. Returns (status, body)."""
    base = "http://127.0.0.1:%d" % port
    end = time.monotonic() + wait
    while True:
        try:
            if data is None:
                req = urllib.request.Request(base + path)
            else:
                with urllib.request.urlopen(base + "/token", timeout=timeout) as r:
                    token = json.loads(r.read())["t"]
                req = urllib.request.Request(
                    base + path, data=data, headers={"Origin": base, "X-IAS-Token": token}
                )
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError:
            raise
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
