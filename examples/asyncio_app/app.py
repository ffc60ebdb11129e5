# An existing asyncio application (a sampler, a blinker and a periodic report, each its own
# task) with the IAS client added as one more task. Before, it ended with
# asyncio.run(main()); now the device runs main(ias), and the app starts the client's task
# itself. docs/app-api.md explains how the client's task, the trial and the commit relate.
import asyncio

readings = []


async def sample(period_ms):
    n = 0
    while True:
        n += 1
        readings.append(n)  # stands in for reading a sensor
        if len(readings) > 8:
            readings.pop(0)
        await asyncio.sleep_ms(period_ms)


async def blink(board, period_ms):
    on = False
    while True:
        on = not on
        board.led(on)
        await asyncio.sleep_ms(period_ms)


async def report(version, period_ms):
    while True:
        await asyncio.sleep_ms(period_ms)
        last = readings[-1] if readings else None
        print("asyncio_app %s: %d samples, last %s" % (version, len(readings), last))


def setup(ias):
    # Runs first, as for any app: declare the fields config mode edits, hook the events.
    ias.add_field("sample_ms", "Sample period (ms)", "50", 6, "N")
    ias.on("update_success", lambda: print("asyncio_app: update installed, restarting"))
    ias.on("no_update", lambda reason: print("asyncio_app: no update (%s)" % reason))


async def main(ias):
    try:
        period = max(10, int(ias.field("sample_ms")))
    except ValueError:
        period = 50
    asyncio.create_task(sample(period))  # the app's own tasks, unchanged
    asyncio.create_task(blink(ias.board, 500))
    asyncio.create_task(ias.client())  # the one line added: the IAS client as a task
    await report(ias.version, 300)
