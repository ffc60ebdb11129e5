# The device: board, settings, state, trust store and the user's app, wired together; the main
# loop (call-home schedule, mode button, the app) and the way into config mode.
import sys

import log
import settings as settings_mod

LOOP_MS = 100  # how often the loop wakes on hardware: button and app get this resolution


class Device:
    def __init__(self, board, settings, state, store=None):
        self.board = board
        self.settings = settings
        self.state = state
        self.store = store
        self.app = None

    @classmethod
    def open(cls):
        try:
            import bootflow

            board, st = bootflow.decision.get("board"), bootflow.decision.get("state")
        except ImportError:
            board = st = None
        if board is None:
            import board as hw

            board = hw.open_board()
        if st is None:
            import state

            st = state.State()
        store = None
        try:
            import certstore

            store = certstore.CertStore()
        except ImportError:
            pass
        return cls(board, settings_mod.load(), st, store)

    # -- network and clock ------------------------------------------------------------------
    def start_network(self):
        ip = self.board.wifi_connect(self.settings["wifi"])
        if ip is None:
            log.warn("net", "no saved Wi-Fi network could be joined")
            return None
        log.info("net", "Wi-Fi up, ip %s" % ip)
        floor = self.state.get("time_floor", 0)
        if self.board.sync_clock(floor):
            self._raise_time_floor()
        else:
            log.warn("clock", "no sane time: verified TLS refused until NTP answers")
        return ip

    def _raise_time_floor(self):
        # Persist a floor under which no later NTP answer is believed; once a day is enough.
        now = self.board.time()
        if now - self.state.get("time_floor", 0) > 86400:
            self.state.set("time_floor", now)

    # -- the user's app ---------------------------------------------------------------------
    def start_app(self):
        import app_api

        self.app = app_api.App(self.board, self.settings)
        folder = self._app_folder()
        if folder is None:
            log.info("app", "no app installed")
            return
        sys.path.insert(0, folder)
        try:
            import app
        finally:
            sys.path.pop(0)
        self.app.start(app)

    def _app_folder(self):
        try:
            import ota

            return ota.active_app_dir()
        except ImportError:
            import json

            try:
                with open("/app.json") as f:
                    return "/" + json.load(f)["active"]
            except (OSError, ValueError, KeyError):
                return None

    # -- call home and config mode ------------------------------------------------------------
    def _connector(self):
        """connect(host, port, timeout_ms, scheme=None): verified TLS for https (the default
        follows the server setting), plain TCP for http; remembers whether it was verified."""
        import callhome

        def connect(host, port, timeout_ms, scheme=None):
            if scheme is None:
                scheme = "http" if self.settings["server"].startswith("http://") else "https"
            self.verified = False
            if scheme == "http":
                import net

                return callhome.polled(net.tcp_connect(host, port, timeout_ms))
            import certstore

            floor = self.state.get("time_floor", 0)
            stream = certstore.connect(host, port, self.store, self.board, timeout_ms, floor)
            self.verified = getattr(stream, "verified", False)
            return callhome.polled(stream)

        return connect

    def call_home(self, force=False):
        """One call home; an update is staged and left for apply(). Returns the outcome."""
        import callhome

        self.verified = False
        if self.app is not None:
            self.app.emit("update_check")
        installed = self._installed()
        out = callhome.call_home(self, self._connector(), self._make_installer(), installed)
        if out["outcome"] == "error" and out["reason"] in ("untrusted", "expired"):
            if self._recover(force):
                out = callhome.call_home(
                    self, self._connector(), self._make_installer(), installed
                )
        self._after_call(out)
        return out

    def _installed(self):
        try:
            import ota

            return ota.installed_artifact()
        except ImportError:
            return {}

    def _make_installer(self):
        def make(first):
            try:
                import ota
            except ImportError:
                import staging

                return staging.StagingInstaller()
            return ota.installer_for(first, self)

        return make

    def _recover(self, force):
        try:
            import anchors
        except ImportError:
            return False
        return anchors.recover(self, force=force)

    def _after_call(self, out):
        outcome = out["outcome"]
        app = self.app
        if outcome == "error":
            log.warn("callhome", "failed: %s %s" % (out["reason"], out.get("detail", "")))
            if app is not None:
                app.emit("update_error", out["reason"])
            return
        if outcome == "updated":
            log.info(
                "callhome", "update %s %s staged" % (out["app"]["name"], out["app"]["version"])
            )
            return
        log.info("callhome", "%s (%s)" % (outcome, out["reason"]))
        if app is not None:
            app.emit("no_update", out["reason"])
        if self.verified or not self.board.tls_verifies:
            self._healthy()

    def _healthy(self):
        """A call home completed: the version on trial, and a new anchor set, have proven
        themselves."""
        try:
            import ota

            ota.commit(self.board, self.state)
        except ImportError:
            pass
        try:
            import anchors

            anchors.confirm(self)
        except ImportError:
            pass

    def apply(self, out):
        """Switch to a staged update and reset into it (the new version then gets its trial)."""
        installer = out["installer"]
        if self.app is not None:
            self.app.emit("update_success")
        installer.activate()
        log.info(
            "ota", "switched to %s %s, resetting" % (out["app"]["name"], out["app"]["version"])
        )
        self.board.reset()

    def config_mode(self, port=None):
        import configmode

        configmode.run(self, port=port)

    # -- the loop -----------------------------------------------------------------------------
    def run(self, mode="normal"):
        import button
        import schedule

        board = self.board
        if mode == "config" or self.start_network() is None:
            self.state.drop("mode")
            self.config_mode()
            board.reset()
        self.start_app()
        plan = schedule.Schedule(self.settings["interval"], clock=board.ticks_ms)
        if mode == "callhome":
            plan.press()
        btn = button.Button(
            board.button_pressed, board.ticks_ms, board.ticks_diff, board.led_pattern
        )
        log.info("main", "main loop")
        idle = getattr(board, "loop_ms", LOOP_MS)
        while True:
            board.feed_watchdog()
            action = btn.poll()
            if action == "callhome":
                plan.press()
            elif action == "config":
                self.state.set("mode", "config")  # IAS restarts into config mode
                board.reset()
            why = plan.poll()
            if why is not None:
                log.info("callhome", "calling home (%s)" % why)
                out = self.call_home(force=why == "button")
                if out["outcome"] == "updated":
                    self.apply(out)
                plan.done(out["outcome"], out.get("retry_after"))
            if self.app is not None:
                self.app.tick()
            board.cycle_done()
            wait = plan.next_in_ms()
            board.sleep_ms(idle if btn.held or wait is None or wait > idle else max(wait, 1))


def main():
    dev = None
    try:
        dev = Device.open()
        try:
            import bootflow

            mode = bootflow.decision.get("mode", "normal")
        except ImportError:
            mode = "normal"
        dev.run(mode)
    except Exception as e:  # on hardware an uncaught error would leave the board at the REPL
        log.exc("main", "fatal error, resetting", e)
        board = dev.board if dev is not None else None
        if board is None:
            import board as hw

            board = hw.open_board()
        board.reset()
