# What boot.py decides, before main.py: which reset this was, whether an update on trial must be
# rolled back, and whether the mode button held at power-on asks for config mode. The decision is
# returned to boot.py, which keeps it in the one namespace boot.py and main.py share on the ESP
# ports; main.py hands it to device.main().
from . import board as hw
from . import log


def run(b=None, state_path=None, root=""):
    """Decide; the board, the state file and the slots' root can be given (tests), else the
    port's own. Returns {"board", "state", "slots", "cause", "mode"}: mode is "normal",
    "config" or "callhome"."""
    b = b or hw.open_board()
    if b.watchdog_ms:
        b.start_watchdog(b.watchdog_ms)  # first: everything after this can hang
    log.set_clock(getattr(b, "time", None))
    cause = b.reset_cause()
    log.info("boot", "reset cause: %s" % cause)
    from . import slots, state, trial

    st = state.State(state_path) if state_path else state.State()
    s = slots.Slots(root)
    decision = {"board": b, "state": st, "slots": s, "cause": cause, "mode": "normal"}
    if trial.boot_check(b, st, s) or cause in (hw.CRASH, hw.WATCHDOG):
        log.flush()  # a boot event worth keeping: a trial boot, a rollback, a crash
    if st.get("mode") == "config":
        decision["mode"] = "config"
    elif b.button_pressed():
        from . import button

        btn = button.Button(b.button_pressed, b.ticks_ms, b.ticks_diff, b.led_pattern)
        action = btn.wait_release(b.sleep_ms)
        log.info("boot", "mode button at power-on: %s" % action)
        if action in ("config", "callhome"):
            decision["mode"] = action
    return decision
