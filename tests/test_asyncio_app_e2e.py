"""Issue 18 item 6: the asyncio example of docs/app-api.md runs on a virtual ESP32 booted from
its flash against `ias serve` over real TLS. The example arrives as an update, its own tasks
run beside the client's task, and that task calls home, confirms the trial (commit) and
installs the next version, so the documented example cannot drift from the firmware."""

import json

import pytest

from tests.scenario import (  # noqa: F401 (fixtures)
    APP,
    make_chain,
    make_world,
    staged_firmware,
)
from tools import REPO, bundle

EXAMPLE = REPO / "examples" / "asyncio_app"


@pytest.fixture
def world(make_world):  # noqa: F811
    chain = make_chain("A")
    return make_world(trust=[chain.root], serve=chain)


def publish_example(world, version, counter):
    folder = world.work / "artifacts" / APP
    folder.mkdir(parents=True, exist_ok=True)
    name = "%s-%s.tar.gz" % (APP, version)
    (folder / name).write_bytes(bundle.build(EXAMPLE, world.key, APP, version, counter, True))
    (folder / "current.json").write_text(
        json.dumps({"name": APP, "version": version, "file": name})
    )


def boot_log(world):
    return world.console().split("--- boot 1 ")[-1]


def test_asyncio_example_runs_its_tasks_and_the_client_task(world):
    publish_example(world, "2.0", 2)
    world.boot(20)  # factory app installs 2.0, resets; 2.0 runs as an asyncio app
    log = boot_log(world)
    ptr = world.pointer()
    assert (ptr.get("version"), "trial" in ptr) == ("2.0", False), log[-3000:]
    assert "asyncio app: the client runs as one of its tasks" in log
    trial_boot = log.split("trial boot 1 of %s 2.0" % APP)[1]
    # The client's task called home from inside the app's event loop and confirmed the trial,
    # while the app's own tasks ran (the report counts the sampler's readings).
    assert "I callhome: up-to-date" in trial_boot and "I ota: committed %s 2.0" % APP in trial_boot
    assert "asyncio_app: no update (" in trial_boot  # the app's hook fired from the client task
    assert "asyncio_app 2.0: 8 samples" in trial_boot, trial_boot[-2000:]

    # The next version is installed by the client's task running inside the asyncio app.
    publish_example(world, "3.0", 3)
    world.boot(6)
    log = boot_log(world)
    assert "asyncio_app: update installed, restarting" in log, log[-3000:]
    ptr = world.pointer()
    assert (ptr.get("version"), "trial" in ptr) == ("3.0", False), log[-3000:]
