# An asyncio app and the client in one event loop. When the app's module defines
# `async def main(ias)`, the device gives it the event loop instead of running its own loop;
# the client's turn (device.Device.cycle: watchdog, mode button, call home when due, the app's
# loop(), the trial's deadline) becomes one task, which the app starts with
# asyncio.create_task(ias.client()). A call home blocks the loop while it runs (seconds).
import asyncio

TURN_MS = 100  # at most this long between two turns of the client


async def client(turn):
    while True:
        await asyncio.sleep_ms(min(turn(), TURN_MS))


def run(app, turn):
    """Run the app's main(ias) until it returns; raises what it raised (the device decides:
    a version on trial is rolled back). `turn()` is one turn of the client, returning the ms
    it may sleep."""
    app.client = lambda: client(turn)
    asyncio.run(app.module.main(app))
