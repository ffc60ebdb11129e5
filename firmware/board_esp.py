# What ESP32 and ESP8266 share, written against MicroPython's documented machine/network APIs.
# Pins follow the IAS examples: mode button on GPIO0 (active low), LED on GPIO2.
import machine
import network

from . import log
from .board import BoardBase, format_mac, port_time, unix_time

RESET_MARK = b"IASR"  # kept in RTC memory across machine.reset(): a deliberate reset, not a crash


class EspBoard(BoardBase):
    config_port = 80

    def __init__(self, button_pin=0, led_pin=2, led_active_high=True):
        self._button = machine.Pin(button_pin, machine.Pin.IN, machine.Pin.PULL_UP)
        self._led = machine.Pin(led_pin, machine.Pin.OUT)
        self._led_on = 1 if led_active_high else 0
        self._sta = network.WLAN(network.WLAN.IF_STA)
        self._ap = network.WLAN(network.WLAN.IF_AP)

    def uptime_ms(self):
        return self.ticks_ms()

    def ntp_time(self):
        """NTP's answer in Unix seconds, or None. ntptime checks nothing in the reply: a short or
        odd one raises ValueError (or IndexError, OverflowError), a lost one OSError. None of it
        may escape start_network and reset the board: logged, and the clock stays unset."""
        try:
            import ntptime

            ntptime.timeout = 2
            t = ntptime.time()
        except Exception as e:
            log.warn("clock", "NTP failed: %r" % (e,))
            return None
        return unix_time(t)  # ntptime answers in the port's epoch

    def sync_clock(self, floor=0):
        try:
            return super().sync_clock(floor)
        except Exception as e:  # the RTC refusing what NTP said: the clock stays as it was
            log.warn("clock", "not set: %r" % (e,))
            return False

    def set_time(self, t):
        import time

        tm = time.gmtime(port_time(t))
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))

    def mac_bytes(self):
        return self._sta.config("mac")

    def mac(self):
        return format_mac(self.mac_bytes())

    def flash_size(self):
        import esp

        return esp.flash_size()

    def core_version(self):
        import sys

        return "micropython-%d.%d.%d" % sys.implementation.version[:3]

    def led(self, on):
        self._led.value(self._led_on if on else 1 - self._led_on)

    def button_pressed(self):
        return self._button.value() == 0

    def wifi_connect(self, networks, timeout_ms=10000):
        self._sta.active(True)
        for net in networks:
            self._sta.connect(net["ssid"], net.get("password", ""))
            start = self.ticks_ms()
            while self.ticks_diff(self.ticks_ms(), start) < timeout_ms:
                if self._sta.isconnected():
                    return self.wifi_ip()
                self.sleep_ms(200)
            self._sta.disconnect()
        return None

    def wifi_ip(self):
        return self._sta.ifconfig()[0] if self._sta.isconnected() else None

    def wifi_scan(self):
        self._sta.active(True)
        return [(r[0].decode(), r[3], r[4] != 0) for r in self._sta.scan()]

    def ap_start(self, ssid, password):
        self._ap.active(True)
        if password:
            self._ap.config(ssid=ssid, key=password, security=network.WLAN.SEC_WPA2)
        else:
            self._ap.config(ssid=ssid, security=network.WLAN.SEC_OPEN)
        return self._ap.ifconfig()[0]

    def ap_stop(self):
        self._ap.active(False)

    def take_reset_mark(self):
        rtc = machine.RTC()
        marked = rtc.memory() == RESET_MARK
        if marked:
            rtc.memory(b"")
        return marked

    def reset(self):
        machine.RTC().memory(RESET_MARK)
        machine.reset()

    def cycle_done(self):
        pass

    def console(self, text):
        print(text)

    def fs_free(self):
        import os

        st = os.statvfs("/")
        return st[0] * st[3]
