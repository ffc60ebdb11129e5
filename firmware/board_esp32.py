# ESP32: mbedTLS verifies certificates; firmware images go to the next OTA slot.
import machine

from .board import (
    CRASH,
    DEEPSLEEP,
    DEFLATE_WBITS,
    INTENDED,
    POWER_ON,
    SOFT,
    UNKNOWN,
    WATCHDOG,
    chip_id_from_mac,
)
from .board_esp import EspBoard


class Esp32Board(EspBoard):
    port = "esp32"
    chip = "esp32"
    has_firmware_ota = True
    deflate_wbits = DEFLATE_WBITS["esp32"]
    watchdog_ms = 60000  # a TLS handshake or a partition erase blocks for seconds, not a minute

    def chip_id(self):
        return chip_id_from_mac(self.mac_bytes())

    def flash_id(self):
        return 0  # MicroPython does not expose the JEDEC id on ESP32

    def reset_cause(self):
        cause = machine.reset_cause()
        marked = self.take_reset_mark()
        if cause == machine.HARD_RESET:  # machine.reset() and a panic look the same (facts §5.6)
            return INTENDED if marked else CRASH
        return {
            machine.PWRON_RESET: POWER_ON,
            machine.WDT_RESET: WATCHDOG,
            machine.DEEPSLEEP_RESET: DEEPSLEEP,
            machine.SOFT_RESET: SOFT,
        }.get(cause, UNKNOWN)

    def make_watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def running_partition(self):
        from esp32 import Partition

        try:
            part = Partition(Partition.RUNNING)
            part.get_next_update()
        except OSError:
            return None  # not an OTA partition table
        return part
