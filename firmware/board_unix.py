# The virtual board: the unix port standing in for an ESP32 or ESP8266.
# Its hardware description and run-time facts live in a host folder (mounted at /host by the
# launcher, tools/vboard/launch.py); flash is a littlefs image mounted at /.
import os
import sys
import time

from . import fsutil
from .board import DEFLATE_WBITS, EPOCH_2000, BoardBase, chip_id_from_mac, format_mac, unix_time
from .reason import const

EXIT_RESET = const(75)  # the process ends; the host starts the next boot (a hard reset)
EXIT_HALT = const(76)  # the scripted run is over


class VirtualBoard(BoardBase):
    port = "unix"

    def __init__(self, host="/host"):
        self.host = host
        self.hw = fsutil.read_json(host + "/board.json", {})
        self.run = fsutil.read_json(host + "/run.json", {})
        self.chip = self.hw.get("chip", "esp32")
        self.tls_verifies = self.chip != "esp8266" or self.hw.get("tls_verifies", False)
        self.has_firmware_ota = self.chip == "esp32"
        self.deflate_wbits = self.hw.get("deflate_wbits", DEFLATE_WBITS.get(self.chip, 10))
        self._skipped_ms = 0  # virtual time: sleeps are skipped, the clocks move on
        # ... and the world's clock (what NTP says) stays ahead across resets by what earlier
        # boots skipped, so time never runs backwards from one boot to the next
        self._world_ms = fsutil.read_json(host + "/clock.json", {}).get("skipped_ms", 0)
        self._boot_ticks = time.ticks_ms()
        self._clock_offset = None  # seconds added to the host clock once "NTP" answered
        # Under libfaketime with FAKETIME_TIMESTAMP_FILE naming the host folder's "faketime",
        # the TLS library's clock follows set_time() as an ESP32's mbedTLS follows its RTC
        # (tests make NTP lie to TLS too). The board reaches its host folder as self.host.
        self._fake_file = host + "/faketime" if os.getenv("FAKETIME_TIMESTAMP_FILE") else None
        self._fake_s = 0
        self._set_fake(0)
        self._led = None
        self._ap = None
        self._sta_ip = None
        self.loop_ms = 1000  # virtual time is free: wake once a virtual second
        self.config_port = self.hw.get("config_port", 8080)
        self.dns_port = self.hw.get("dns_port", 0)  # config mode's DNS; 0: none (host's 53)

    # -- clock ------------------------------------------------------------------------------
    def ticks_ms(self):
        return time.ticks_add(time.ticks_ms(), self._skipped_ms)

    def sleep_ms(self, ms):
        if self.hw.get("fast_time", True):
            self._skipped_ms += ms
            time.sleep_ms(0)
        else:
            time.sleep_ms(ms)

    def uptime_ms(self):
        return time.ticks_diff(self.ticks_ms(), self._boot_ticks)

    def time(self):
        if self._clock_offset is None:
            if not self.hw.get("rtc_set", False):
                # An ESP32 RTC starts at 2000-01-01 after power-on.
                return EPOCH_2000 + self.uptime_ms() // 1000
            self._clock_offset = 0
        return self._real_now() + self._clock_offset + self._ahead_s()

    def _real_now(self):
        return _host_now() - self._fake_s

    def _set_fake(self, seconds):
        if self._fake_file:
            with open(self._fake_file, "w") as f:
                f.write("%+d\n" % seconds)
            self._fake_s = seconds

    def _ahead_s(self):
        return (self._world_ms + self._skipped_ms) // 1000

    def _save_world_time(self):
        with open(self.host + "/clock.json", "w") as f:
            f.write('{"skipped_ms": %d}' % (self._world_ms + self._skipped_ms))

    def ntp_time(self):
        ntp = self.hw.get("ntp", "host")
        if ntp == "host":
            return self._real_now() + self._ahead_s()
        if isinstance(ntp, int):
            return ntp  # a scripted (perhaps absurd) answer
        return None  # no answer

    def set_time(self, t):
        self._clock_offset = t - self._real_now() - self._ahead_s()
        self._set_fake(self._clock_offset + self._ahead_s())

    # -- ids --------------------------------------------------------------------------------
    def mac_bytes(self):
        text = self.hw.get("mac", "24:0A:C4:00:00:01")
        return bytes(int(p, 16) for p in text.split(":"))

    def mac(self):
        return format_mac(self.mac_bytes())

    def chip_id(self):
        return chip_id_from_mac(self.mac_bytes())

    def flash_id(self):
        return self.hw.get("flash_id", 1458400)

    def flash_size(self):
        return self.hw.get("flash_size", 4194304)

    def core_version(self):
        return "micropython-%d.%d.%d-unix" % sys.implementation.version[:3]

    # -- LED and button -----------------------------------------------------------------------
    def led(self, on):
        self._led = bool(on)

    def led_pattern(self, name):
        if name != self._led:
            self._led = name
            self.console("LED %s" % name)

    def button_pressed(self):
        """The mode button: held for run.json's hold_button seconds after power-on, or scripted
        presses [[start_s, length_s], ...] since boot."""
        t = self.uptime_ms()
        hold = self.run.get("hold_button", 0)
        if hold and t < hold * 1000:
            return True
        for start, length in self.run.get("presses", ()):
            if start * 1000 <= t < (start + length) * 1000:
                return True
        return False

    # -- Wi-Fi ------------------------------------------------------------------------------
    def wifi_connect(self, networks, timeout_ms=10000):
        """Join the first saved network that is in range; returns the IP or None."""
        in_range = {n["ssid"]: n.get("password", "") for n in self.hw.get("networks", ())}
        for net in networks:
            if in_range.get(net.get("ssid")) == net.get("password", ""):
                self._sta_ip = "127.0.0.1"
                return self._sta_ip
        self.sleep_ms(timeout_ms)
        return None

    def wifi_ip(self):
        return self._sta_ip

    def wifi_scan(self):
        return [
            (n["ssid"], n.get("rssi", -60), bool(n.get("password")))
            for n in self.hw.get("networks", ())
        ]

    def ap_start(self, ssid, password):
        self._ap = (ssid, password)
        self.console("AP up: %s (%s)" % (ssid, "WPA2" if password else "open"))
        return "127.0.0.1"

    def ap_stop(self):
        self._ap = None

    # -- reset, watchdog, lifecycle -----------------------------------------------------------
    def reset_cause(self):
        return self.run.get("cause", "power_on")

    def reset(self):
        self.console("reset")
        self._save_world_time()
        sys.exit(EXIT_RESET)

    def make_watchdog(self, timeout_ms):
        return _Watchdog()

    def cycle_done(self):
        """The main loop finished one cycle; the host may have asked to stop after N in all
        (counted across resets in the host file `cycles`)."""
        self._save_world_time()
        target = self.run.get("cycles_target")
        if target is None:
            return
        path = self.host + "/cycles"
        try:
            with open(path) as f:
                done = int(f.read() or 0) + 1
        except (OSError, ValueError):
            done = 1
        with open(path, "w") as f:
            f.write(str(done))
        if done >= target:
            self.console("halt after %d main-loop cycles" % done)
            sys.exit(EXIT_HALT)

    def console(self, text):
        print("[board] " + text)

    # -- OTA partitions (virtual ESP32 only) --------------------------------------------------
    def running_partition(self):
        if not self.has_firmware_ota:
            return None
        from .vpartition import VirtualPartition

        return VirtualPartition(self.host, VirtualPartition.RUNNING)

    def fs_free(self):
        st = os.statvfs("/")
        return st[0] * st[3]


def _host_now():
    # Unix seconds of the host's clock, through the port's epoch (a chip profile counts from 2000)
    return unix_time(int(time.time()))


class _Watchdog:
    def feed(self):
        pass
