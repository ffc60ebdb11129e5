"""Issue 16, the memory diet, end to end: a virtual ESP32 whose MicroPython heap is limited
(`-X heapsize`, 64-bit unix port) boots from its flash, calls home to `ias serve` over verified
TLS, installs the signed bundle, resets into it and commits it, all through its own main loop.

The budget is the whole run's: boot and the loop (the launcher, the bootloader model and the
app included), a call home with its install, the trial boot and its verified call home. Before
the diet this run needed 210-220 KiB of heap; phases that release their modules, the trust
store's parser kept off the connection path and a transport made only for a call bring it to
185-190 KiB (measured with this test's own machinery). 200 KiB is the budget in between."""

import stat

from tests.scenario import (  # noqa: F401 (fixtures)
    make_chain,
    make_world,
    staged_firmware,
)
from tools import sim

BUDGET_KIB = 200


def heap_limited(tmp_path, monkeypatch, kib):
    """Every power-on of the virtual board runs under `-X heapsize=<kib>K`."""
    real = sim.micropython()
    wrap = tmp_path / ("micropython-%dk" % kib)
    wrap.write_text('#!/bin/sh\nexec "%s" -X heapsize=%dK "$@"\n' % (real, kib))
    wrap.chmod(wrap.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(sim, "micropython", lambda: str(wrap))


def test_update_applied_and_committed_within_the_heap_budget(
    make_world,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    chain = make_chain("A")
    world = make_world(trust=[chain.root], serve=chain)
    world.publish("2.0", 2)
    heap_limited(tmp_path, monkeypatch, BUDGET_KIB)
    world.boot(3)
    ptr = world.pointer()
    console = world.console()
    assert "no_memory" not in console and "MemoryError" not in console, console[-3000:]
    assert ptr.get("version") == "2.0" and "trial" not in ptr, console[-3000:]
