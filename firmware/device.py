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
    def call_home(self, force=False):
        return {"outcome": "error", "reason": "not_built", "app": None}

    def config_mode(self, port=None):
        log.warn("config", "config mode is not built yet")

    # -- the loop -----------------------------------------------------------------------------
    def run(self):
        board = self.board
        ip = self.start_network()
        if ip is None:
            self.config_mode()
            board.reset()
        self.start_app()
        log.info("main", "main loop")
        idle = getattr(board, "loop_ms", LOOP_MS)
        while True:
            board.feed_watchdog()
            if self.app is not None:
                self.app.tick()
            board.cycle_done()
            board.sleep_ms(idle)


def main():
    dev = None
    try:
        dev = Device.open()
        dev.run()
    except Exception as e:  # on hardware an uncaught error would leave the board at the REPL
        log.exc("main", "fatal error, resetting", e)
        board = dev.board if dev is not None else None
        if board is None:
            import board as hw

            board = hw.open_board()
        board.reset()
