# The device: board, settings, state, trust store and the user's app, wired together; the main
# loop (call-home schedule, mode button, the app) and the way into config mode.
import gc
import sys

from . import board as hw
from . import log, phase, timefloor
from .reason import ReasonError

LOOP_MS = 100  # how often the loop wakes on hardware: button and app get this resolution
REFRESH_HORIZON_S = 181 * 86400  # anchors.py refreshes 180, 60 and 30 days before expiry


class Device:
    def __init__(self, board, settings, state, store, slots=None, transport=None):
        self.board = board
        self.settings = settings
        self.state = state
        self.store = store
        log.set_clock(getattr(board, "time", None))  # log lines carry the board's time
        if slots is None:
            from .slots import Slots

            slots = Slots("", settings)  # settings name the factory app (slots.py)
        self.slots = slots
        self.app = None
        # Every connection the device opens goes through its one transport. Unless given, it is
        # made when a call home (or config mode) first needs it and dropped when the call
        # ends, so the loop between calls holds no network code (the app's heap).
        self._transport = transport
        self._own_transport = transport is None

    @property
    def transport(self):
        if self._transport is None:
            from .transport import Transport

            self._transport = Transport(self.board, self.store, self.state)
        return self._transport

    @transport.setter
    def transport(self, value):
        self._transport = value
        self._own_transport = value is None

    @classmethod
    def open(cls, decision=None):
        """The device over what boot.py decided (its board and state are reused), or over a
        fresh board and state when boot.py did not get that far."""
        from . import certstore

        decision = decision or {}
        board, st = decision.get("board"), decision.get("state")
        if board is None:
            board = hw.open_board()
        if st is None:
            from . import state

            st = state.State()
        s = _load_settings()
        return cls(board, s, st, certstore.CertStore(), decision.get("slots"))

    # -- network and clock ------------------------------------------------------------------
    def start_network(self):
        ip = self.board.wifi_connect(self.settings["wifi"])
        if ip is None:
            log.warn("net", "no saved Wi-Fi network could be joined")
            self._note_contact("no_wifi")
            return None
        log.info("net", "Wi-Fi up, ip %s" % ip)
        # NTP sets the clock, never the floor (timefloor.py): only authenticated time moves it
        if not self.board.sync_clock(timefloor.floor(self.state)):
            log.warn("clock", "no sane time: verified TLS refused until NTP answers")
        self._finish_cut_anchor_changes()
        return ip

    def _finish_cut_anchor_changes(self):
        # A power cut may have interrupted an anchor-set change: the store finishes its own
        # writes; a pending signed set (rare) needs anchors.py and a sane clock.
        if self.state.get("anchors_pending"):
            from . import anchors, anchortx

            anchortx.resume(self.state, self.store, anchors.sane_time(self.board, self.state))
            return
        try:
            self.store.recover()
        except OSError as e:
            log.warn("cert", "store recovery: %r" % e)
        # The anchors' dates (telemetry, the refresh horizon) parsed now, before the app's
        # objects fill the heap: a call home then never loads the certificate parser.
        self.store.earliest_expiry(self.board.time())

    # -- the user's app ---------------------------------------------------------------------
    def start_app(self):
        """Import and set up the app of the active slot. A version on trial that fails here is
        rolled back at once (the board resets); a committed one is logged and left out, so
        the client keeps calling home for a fix."""
        from . import app_api

        self.app = app_api.App(self.board, self.settings, self.slots.installed_artifact())
        folder = self.slots.active_app_dir()
        if folder is None:
            log.info("app", "no app installed")
            return
        # The slot and its lib/ stay on the path for the app's whole life (it may import lazily);
        # the client lives in the package ias, so nothing the app brings can replace it.
        sys.path[:0] = [folder, folder + "/lib"]
        try:
            import app

            self.app.start(app)
        except Exception as e:
            self._app_failed("app failed to start", e)

    def _app_failed(self, what, e):
        from . import trial

        log.exc("app", what, e)
        if trial.pending(self.slots):
            trial.app_failed(self.state)
            trial.rollback(self.board, self.state, "%s: %r" % (what, e), self.slots)  # resets
        self.app.module = None  # a committed app that fails stays off until an update

    # -- call home and config mode ------------------------------------------------------------
    def call_home(self, force=False):
        """One call home over IAS, or a poll of the signed static channel when one is set; an
        update is staged and left for apply(). When TLS verification fails with every anchor,
        the recovery ladder runs and the call is retried in the same cycle. Returns the
        outcome."""
        if self.app is not None:
            self.app.emit("update_check")
        out = self._phase(self._ask, force)
        if out["outcome"] == "error" and out["reason"] in timefloor.TIME_FAULTS:
            out = self._ask_again_on_time(force, out)
        if out["outcome"] == "error" and out["reason"] in ("untrusted", "expired"):
            if self._phase(self._recover, force, out["reason"]):
                out = self._phase(self._ask, force)
        elif out["outcome"] == "error" and out["reason"] == "bad_signature":
            if self._phase(self._new_update_key, force):
                out = self._phase(self._ask, force)
        if out["outcome"] == "error":
            self._note_contact(out["reason"])
        self._phase(self._after_call, out)
        return out

    def _phase(self, fn, *args):
        """Run one phase of a call (the protocol, the recovery ladder, the after-call anchor
        work): the modules it imports are released when it ends, with the device's own
        transport, so the heap's peak is the largest phase, not their sum. A staged installer
        keeps what it needs through its own objects."""
        before = phase.loaded()
        gc.collect()  # a boundary: the TLS handshake and an install want the heap in one piece
        try:
            return fn(*args)
        finally:
            if self._own_transport:
                self._transport = None
            phase.release(before)

    def _ask_again_on_time(self, force, out):
        # Verified TLS failed on time: NTP may have lied (design §1 rule 7). Ask it again, or
        # try the confirmed floor; the floor stays only if verified TLS works with it.
        if not timefloor.recheck(self.board, self.state):
            return out
        out = self._phase(self._ask, force)
        if out["outcome"] == "error" and out["reason"] in timefloor.TIME_FAULTS + ("untrusted",):
            timefloor.give_up_floor(self.board, self.state)
        return out

    def _ask(self, force):
        make = self._make_installer()
        feed = self.board.feed_watchdog
        if self.settings["channel"]:
            from . import channel

            return channel.poll(self, make, force, self.transport, feed)
        from . import callhome

        return callhome.call_home(self, self.transport, make, self._installed(), feed=feed)

    def _installed(self):
        return self.slots.installed_artifact()

    def _note_contact(self, reason):
        # While a version is on trial, why its update source could not be reached decides
        # what running out of time means: the network's fault (retried) or the release's.
        if self.slots.trial():
            from . import trial

            trial.note_contact(self.state, self.slots, reason)

    def _make_installer(self):
        """make(first_bytes, trusted), the installer factory the protocols call. trusted: the
        answer came from the update source authenticated in this contact (verified TLS, or a
        channel whose signature verified in this poll). While a version is on trial, a trusted
        answer is the confirmation its trial waits for: it is committed first; otherwise the
        update waits (trial_pending). A board that cannot verify TLS takes its server's word."""
        from . import formats, trial

        def make(first, trusted):
            if trial.pending(self.slots):
                if not (trusted or not self.board.tls_verifies):
                    raise ReasonError("trial_pending", "the version on trial is not committed yet")
                self._healthy()
            gc.collect()  # the installer's modules and buffers fill the holes the head left
            installer = formats.installer_for(
                first, self.board, self.settings, self.state, self.slots, None, trusted
            )
            return installer if self.app is None else _Reported(installer, self.app)

        return make

    def _recover(self, force, why):
        from . import anchors

        result = anchors.recover(self, self.transport.fetch, force=force, why=why)
        log.info("anchors", "recovery ladder: %s" % result["outcome"])
        return result["outcome"] == "installed"

    def _new_update_key(self, force):
        from . import anchors, keyrotation

        places = anchors.recovery_locations(self.settings)
        found = keyrotation.look_for_keys(self, self.transport.fetch, places, force=force)
        log.info("anchors", "update key rotation: %s" % ("new key" if found else "none found"))
        return found

    def _after_call(self, out):
        outcome = out["outcome"]
        now = hw.trusted_time(self.board, timefloor.floor(self.state))
        # Trusted: the IAS answer came over verified TLS (or this board cannot verify TLS at
        # all); the channel's document verified with the update keys in this very poll.
        trusted = bool(out.get("trusted"))
        if not self.settings["channel"] and not self.board.tls_verifies:
            trusted = True
        verified_ok = outcome != "error" and trusted
        self._note_call(out, now)
        if self._anchors_busy(now):
            self._anchors_after(out, now, verified_ok)
        app = self.app
        if outcome == "error":
            log.warn("callhome", "failed: %s %s" % (out["reason"], out.get("detail", "")))
            log.flush()
            if app is not None:
                app.emit("update_error", out["reason"])
            return
        if outcome == "updated":
            log.info(
                "callhome", "update %s %s staged" % (out["app"]["name"], out["app"]["version"])
            )
            log.flush()
            return
        log.info("callhome", "%s (%s)" % (outcome, out["reason"]))
        if app is not None:
            app.emit("no_update", out["reason"])
        if verified_ok:
            self._healthy()

    def _note_call(self, out, now):
        """The last call home as the config page shows it: its outcome and reason, and since
        when. Only a failure, an update, or the first answer after one is written: the
        no-update path writes nothing (a device that never failed shows "no failure")."""
        last = self.state.get("last_call") or {}
        reason = out.get("reason")
        steady = ("up-to-date", "no-update")
        if out["outcome"] in steady and last.get("outcome", "up-to-date") in steady:
            return
        if last.get("outcome") != out["outcome"] or last.get("reason") != reason:
            self.state.set(
                "last_call", {"outcome": out["outcome"], "reason": reason, "since": now}
            )

    def _anchors_busy(self, now):
        """Whether anchors.py has work after this call: a pending set, a report to clear, a
        key rotation window, or an anchor expiring within the refresh horizon. Most calls have
        none, and then anchors.py (a large module) is not loaded at all."""
        st = self.state
        if st.get("anchors_pending") or st.get("anchors_report") or st.get("keys_doc"):
            return True
        if now is None:
            return False
        expiry = self.store.earliest_expiry(now)
        return expiry is not None and expiry - now <= REFRESH_HORIZON_S

    def _anchors_after(self, out, now, verified_ok):
        from . import anchors, anchortx, keyrotation

        # a board whose TLS cannot verify has no way to tell which anchor a peer chains to
        by_new = out.get("anchored") == "new" or not self.board.tls_verifies
        anchortx.after_call_home(self.state, self.store, now, verified_ok, by_new)
        if out["outcome"] == "error":
            return
        anchors.report_sent(self.state)
        keyrotation.retire_keys(self.state)  # on the time floor: no clock needed
        if now is not None:
            anchors.refresh(self, self.transport.fetch)

    def _healthy(self):
        """The update source confirmed this version (a trusted outcome: a verified IAS answer,
        a channel signature verified in this poll, or a trusted answer to the installer
        factory): the version on trial is committed, the only place a commit happens, and a
        failure it reported is delivered."""
        from . import trial

        if trial.commit(self.board, self.state, self.slots) is not None:
            log.flush()  # the commit wrote flash anyway; its line joins the log
        trial.clear_error(self.state)

    def apply(self, out):
        """Switch to a staged update and reset into it (the new version then gets its trial)."""
        installer = out["installer"]
        if self.app is not None:
            self.app.emit("update_success")
        installer.activate()
        log.info(
            "ota", "switched to %s %s, resetting" % (out["app"]["name"], out["app"]["version"])
        )
        log.flush()
        self.board.reset()

    def config_mode(self, port=None):
        """Config mode, blocking; True when it ran (the caller then resets), False when this
        build cannot run it (logged): the board carries on instead of resetting into it again."""
        why = config_mode_missing()
        if why is not None:
            log.warn("config", "config mode unavailable on this build (%s)" % why)
            return False
        from . import configmode

        if self.app is None:
            self.start_app()  # as in IAS, the app's setup declares its fields first
        configmode.run(self, fields=self.app.fields, port=port)
        return True

    # -- the loop -----------------------------------------------------------------------------
    def run(self, mode="normal"):
        from . import button, schedule

        board = self.board
        if mode == "config" or self.start_network() is None:
            self.state.drop("mode")
            if self.config_mode():
                board.reset()
            # No config mode on this build: run on, joining Wi-Fi before each call home.
            if mode == "config":
                self.start_network()
        self.start_app()
        plan = schedule.Schedule(self.settings["interval"], clock=board.ticks_ms)
        if mode == "callhome":
            plan.press()
        btn = button.Button(
            board.button_pressed, board.ticks_ms, board.ticks_diff, board.led_pattern
        )
        module = self.app.module
        if module is not None and hasattr(module, "main"):
            from . import aio  # an asyncio app: the client becomes one of its tasks

            log.info("main", "asyncio app: the client runs as one of its tasks")
            try:
                aio.run(self.app, lambda: self.cycle(plan, btn))
            except Exception as e:
                self._app_failed("app main raised", e)  # on trial: rolled back (resets)
            # main() returned or failed: the client goes on alone, calling home for a fix
        log.info("main", "main loop")
        while True:
            board.sleep_ms(self.cycle(plan, btn))

    def cycle(self, plan, btn):
        """One turn of the loop: watchdog, mode button, a call home when due (an update is
        applied: the board resets), the app's loop(), the trial's deadline. Returns how long
        to sleep before the next turn (ms)."""
        from . import trial

        board = self.board
        board.feed_watchdog()
        action = btn.poll()
        if action == "callhome":
            plan.press()
        elif action == "config":
            if config_mode_missing() is None:
                self.state.set("mode", "config")  # IAS restarts into config mode
                board.reset()
            log.warn("config", "config mode unavailable on this build")
        why = plan.poll()
        if why is not None:
            log.info("callhome", "calling home (%s)" % why)
            if board.wifi_ip() is None and self.start_network() is None:
                out = {"outcome": "error", "reason": "no_wifi"}
            else:
                out = self.call_home(force=why == "button")
            if out["outcome"] == "updated":
                self.apply(out)
            if out.get("poll"):
                plan.interval_s = out["poll"]  # the channel suggests how often to look
            plan.done(out["outcome"], out.get("retry_after"))
        self._tick_app()
        trial.tick(board, self.state, self.slots)
        board.cycle_done()
        idle = getattr(board, "loop_ms", LOOP_MS)
        wait = plan.next_in_ms()
        return idle if btn.held or wait is None or wait > idle else max(wait, 1)

    def _tick_app(self):
        if self.app is None or self.app.module is None:
            return
        try:
            self.app.tick()
        except Exception as e:
            self._app_failed("app loop raised", e)


class _Reported:
    """An installer that tells the app: download_start, then download_progress (done, total)
    at every tenth of the way."""

    def __init__(self, installer, app):
        self.installer = installer
        self.app = app
        self.done = 0
        self.total = 0
        self.next = 0

    def begin(self, size, name, version):
        self.installer.begin(size, name, version)
        self.total = size
        self.next = size // 10
        self.app.emit("download_start")

    def write(self, chunk):
        self.installer.write(chunk)
        self.done += len(chunk)
        if self.done >= self.next:
            self.next = self.done + self.total // 10
            self.app.emit("download_progress", self.done, self.total)

    def finish(self, md5_hex, sha256):
        return self.installer.finish(md5_hex, sha256)

    def abort(self):
        self.installer.abort()

    def activate(self):
        return self.installer.activate()


def _load_settings():
    # The settings module (validation, defaults) is needed only while loading: released after.
    before = phase.loaded()
    from . import settings

    s = settings.load()
    phase.release(before)
    return s


def config_mode_missing():
    """Why config mode cannot run on this build (ESP8266 1 MiB builds have no asyncio, which
    the web server needs), or None when it can."""
    try:
        import asyncio  # noqa: F401
    except ImportError as e:
        return "no asyncio: %s" % (e,)
    return None


def main(decision=None):
    """main.py: the device over boot.py's decision (see bootflow.run), run in its mode."""
    dev = None
    try:
        dev = Device.open(decision)
        dev.run((decision or {}).get("mode", "normal"))
    except Exception as e:  # on hardware an uncaught error would leave the board at the REPL
        log.exc("main", "fatal error, resetting", e)
        board = dev.board if dev is not None else None
        if board is None:
            board = hw.open_board()
        board.reset()
