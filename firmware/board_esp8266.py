# ESP8266: axTLS cannot verify certificates and MicroPython has no firmware OTA here, so only
# signed app bundles are installed (design §2).
import machine

from .board import CRASH, DEEPSLEEP, DEFLATE_WBITS, HARD, INTENDED, POWER_ON, UNKNOWN, WATCHDOG
from .board_esp import EspBoard


class Esp8266Board(EspBoard):
    port = "esp8266"
    chip = "esp8266"
    tls_verifies = False
    deflate_wbits = DEFLATE_WBITS["esp8266"]
    # watchdog_ms stays None: creating machine.WDT here stops the SDK's automatic feeding, and a
    # blocking axTLS handshake could then trip its fixed short timeout (facts §5.5).

    def __init__(self, button_pin=0, led_pin=2, led_active_high=False):
        super().__init__(button_pin, led_pin, led_active_high)

    def wifi_connect(self, networks, timeout_ms=10000):
        self._ap.active(False)  # the first-boot AP stays on otherwise (facts §5.3)
        return super().wifi_connect(networks, timeout_ms)

    def chip_id(self):
        uid = machine.unique_id()
        return uid[0] | uid[1] << 8 | uid[2] << 16 | uid[3] << 24

    def flash_id(self):
        import esp

        return esp.flash_id()

    def reset_cause(self):
        # Raw SDK reasons: 0 power-on, 1 hw WDT, 2 exception, 3 soft WDT, 4 machine.reset(),
        # 5 deep sleep, 6 reset pin (facts §5.6).
        cause = machine.reset_cause()
        marked = self.take_reset_mark()
        if cause == 4:
            return INTENDED if marked else UNKNOWN
        return {0: POWER_ON, 1: WATCHDOG, 2: CRASH, 3: WATCHDOG, 5: DEEPSLEEP, 6: HARD}.get(
            cause, UNKNOWN
        )

    def make_watchdog(self, timeout_ms):
        return machine.WDT()  # the SDK fixes the timeout (facts §5.5)

    def running_partition(self):
        return None
