# The hardware layer. Everything else in firmware/ reaches pins, Wi-Fi, clock, reset, ids,
# OTA partitions and the watchdog through a Board, so every module runs on the unix port.
import sys
import time

from .reason import const

# Unix seconds of the firmware's build; an NTP answer before this is a broken clock.
# tools/deploy.py rewrites this line when it compiles the firmware.
BUILD_TIME = 1795000000

# Normalised reset causes (reference: micropython-facts §5.6).
POWER_ON = "power_on"
HARD = "hard"  # the reset pin
INTENDED = "intended"  # our own reset() call
CRASH = "crash"  # panic or an unhandled exception
WATCHDOG = "watchdog"
SOFT = "soft"
DEEPSLEEP = "deepsleep"
UNKNOWN = "unknown"

EPOCH_2000 = const(946684800)  # Unix seconds of 2000-01-01, where the ESP ports' clocks start
# The deflate window (2**wbits bytes) each chip's heap affords a gzip bundle: DeflateIO takes it
# from the heap in one piece (1 KiB + state ~2.6 KB; 32 KiB for a default gzip). ESP8266: about
# 36 KB free with axTLS in it; ESP32 without PSRAM: about 112 KB. tools/bundle.py writes 10.
DEFLATE_WBITS = {"esp32": 12, "esp8266": 10}
_MAX_CLOCK_AHEAD = const(20 * 365 * 86400)  # an NTP answer this far past the build is a lie


def format_mac(raw):
    return ":".join("%02X" % b for b in raw)


def chip_id_from_mac(raw):
    # IAS's x-ESP-CHIP-ID on ESP32: the low 32 bits of the eFuse MAC (first 4 bytes, LE).
    return raw[0] | raw[1] << 8 | raw[2] << 16 | raw[3] << 24


def clock_is_sane(now, floor=0):
    """True when `now` (Unix seconds) is no earlier than the build time and the persisted floor."""
    low = BUILD_TIME if BUILD_TIME > floor else floor
    return low <= now <= BUILD_TIME + _MAX_CLOCK_AHEAD


def epoch_of(gmtime):
    """Unix seconds at the port's time zero, from the year `gmtime(0)` names: 1970 on unix (0),
    2000 on the ESP ports (946684800). A fixed offset, never a guess from the value: a count
    from 2000 passes 946684800 on 2029-12-31."""
    y = gmtime(0)[0]
    return (365 * (y - 1970) + (y - 1969) // 4) * 86400  # leap days: exact for 1970..2099


# The one offset between the port's time (time.time, gmtime, RTC, ntptime) and the Unix seconds
# the client speaks everywhere; every crossing goes through unix_time() or port_time().
PORT_EPOCH = epoch_of(time.gmtime)


def unix_time(t):
    """Unix seconds from the port's seconds (time.time(), ntptime.time())."""
    return t + PORT_EPOCH


def port_time(t):
    """The port's seconds from Unix seconds (for time.gmtime, the RTC)."""
    return t - PORT_EPOCH


def trusted_time(board, floor=0):
    """The board's Unix time when NTP set it and it is sane (past the build and `floor`), else
    None: expiry decisions never run on an unset clock (an ESP32 starts at 2000-01-01)."""
    if not getattr(board, "clock_synced", False):
        return None
    now = board.time()
    return now if clock_is_sane(now, floor) else None


class BoardBase:
    """Shared behaviour; a port fills in the hardware calls."""

    port = "base"
    tls_verifies = True  # False where TLS cannot check certificates (ESP8266's axTLS)
    watchdog_ms = None  # armed by boot when set; long work feeds it (installs, config mode)
    has_firmware_ota = False
    clock_synced = False
    clock_fallback = False  # the clock runs from the confirmed floor, NTP was distrusted
    deflate_wbits = DEFLATE_WBITS["esp8266"]  # the smallest; each chip's board sets its own

    def time(self):
        import time  # looked up at each call: a test may stand in a port's time module

        return unix_time(int(time.time()))

    def ticks_ms(self):
        import time

        return time.ticks_ms()

    def ticks_diff(self, a, b):
        import time

        return time.ticks_diff(a, b)

    def sleep_ms(self, ms):
        import time

        time.sleep_ms(ms)

    def sync_clock(self, floor=0):
        """Ask NTP, accept the answer only when it is sane (past the build and the confirmed
        `floor`, timefloor.py). Returns True when the clock is good. NTP never moves the floor."""
        answer = self.ntp_time()
        if answer is None or not clock_is_sane(answer, floor):
            return self.clock_synced and clock_is_sane(self.time(), floor)
        self.adopt_time(answer)
        self.clock_fallback = False
        return True

    def adopt_time(self, t):
        """Set the clock to `t` (Unix seconds) and call it set."""
        self.set_time(t)
        self.clock_synced = True

    def led_pattern(self, name):
        """Show a pattern: off, on, short, long, cancel, config, update, error."""
        self.led(name not in ("off", "cancel"))

    def feed_watchdog(self):
        if self._wdt is not None:
            self._wdt.feed()

    _wdt = None

    def start_watchdog(self, timeout_ms):
        self._wdt = self.make_watchdog(timeout_ms)


def open_board():
    """The board for the port we run on."""
    if sys.platform == "esp32":
        from .board_esp32 import Esp32Board

        return Esp32Board()
    if sys.platform == "esp8266":
        from .board_esp8266 import Esp8266Board

        return Esp8266Board()
    from .board_unix import VirtualBoard

    return VirtualBoard()
