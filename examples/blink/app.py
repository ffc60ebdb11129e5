# IASBlink for MicroPython: blink the LED at an interval set in config mode.
_state = {"on": False, "next": 0}


def setup(ias):
    ias.add_field("blink_ms", "Blink interval (ms)", "500", 6, "N")
    ias.on("update_success", lambda: print("IASBlink: new version installed"))
    ias.on("no_update", lambda reason: print("IASBlink: no update (%s)" % reason))
    ias.on("download_progress", lambda done, total: print("IASBlink: %d of %d" % (done, total)))
    print("IASBlink %s started" % ias.version)


def loop(ias):
    board = ias.board
    now = board.ticks_ms()
    if board.ticks_diff(now, _state["next"]) >= 0:
        _state["on"] = not _state["on"]
        board.led(_state["on"])
        try:
            period = int(ias.field("blink_ms"))
        except ValueError:
            period = 500
        _state["next"] = now + max(50, period)
