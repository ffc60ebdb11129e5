"""The client as MicroPython's own tools take it: package.json for a real `mip install` on the
unix port, and manifest.py for a frozen firmware build (evaluated with stand-ins for the manifest
functions: there is no ESP-IDF or xtensa toolchain here to build a firmware)."""

import json
import os
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from repohost import repo_server  # noqa: F401 (fixture)

from tools import deploy, mplib, packaging
from tools.sim import micropython

ROOT = Path(deploy.ROOT)


def _expected_modules():
    # Every firmware module but the root scripts and the virtual board's own, read from the
    # folder itself (not through tools.packaging) so a new module the generator misses fails.
    names = {p.name for p in (ROOT / "firmware").glob("*.py")}
    return names - {"boot.py", "main.py", "board_unix.py", "vpartition.py"}


def test_package_json_and_manifest_are_generated_from_firmware():
    for path, text in packaging.generated().items():
        assert Path(path).read_text() == text, "%s is stale: python -m tools.packaging" % path


def test_package_json_installs_every_firmware_module_and_microdot():
    doc = json.loads((ROOT / "package.json").read_text())
    dests = {d: src for d, src in doc["urls"]}
    client = {d[len("ias/") :] for d in dests if d.startswith("ias/")}
    assert client == _expected_modules()
    for name in client:
        assert dests["ias/" + name] == "firmware/" + name  # relative: any host serving the repo
    for name in mplib.MICRODOT_FILES:
        url = dests["microdot/" + name]
        assert url.startswith("https://") and "/v%s/" % packaging.MICRODOT_VERSION in url
    assert doc["version"] == metadata.version("ias-micropython")


def test_microdot_pin_is_the_release_the_tests_run():
    assert metadata.version("microdot") == packaging.MICRODOT_VERSION


def test_mip_install_from_a_url_installs_an_importable_client(repo_server, tmp_path):  # noqa: F811
    base, server = repo_server
    lib = tmp_path / "lib"
    proc = subprocess.run(
        [micropython(), "-m", "mip", "install", "--target", str(lib), base + "/package.json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "Done" in proc.stdout, proc.stdout + proc.stderr
    installed = {p.name for p in (lib / "ias").iterdir()}
    assert installed == _expected_modules()
    for name in installed:
        assert (lib / "ias" / name).read_bytes() == (ROOT / "firmware" / name).read_bytes()
    assert sorted(p.name for p in (lib / "microdot").iterdir()) == sorted(mplib.MICRODOT_FILES)
    assert "/microdot/src/microdot/microdot.py" in server.requests
    # The installed tree is the client: its boot path, device loop and config app (Microdot)
    # import from it alone on the unix port.
    probe = (
        "import sys\n"
        "sys.path[:] = ['%s', '.frozen']\n"
        "from ias import bootflow, device, callhome, appbundle, webapp\n"
        "import microdot\n"
        "print('imported', device.__file__, microdot.__file__)\n" % lib
    )
    run = subprocess.run(
        [micropython(), "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "imported %s/ias/device.py %s/microdot/__init__.py" % (lib, lib) in run.stdout


def _run_manifest(cwd):
    """Execute manifest.py as MicroPython's manifest tools do (from its own folder, with their
    functions in its globals), recording what it asks for."""
    calls = {"include": [], "require": [], "package": [], "module": []}

    def record(kind):
        def fn(*args, **kwargs):
            calls[kind].append((args, kwargs))

        return fn

    env = {k: record(k) for k in calls}
    env["options"] = None
    prev = os.getcwd()
    os.chdir(cwd)
    try:
        exec(compile((ROOT / "manifest.py").read_text(), "manifest.py", "exec"), env)
    finally:
        os.chdir(prev)
    return calls


def test_manifest_freezes_every_firmware_module_and_microdot(monkeypatch):
    monkeypatch.delenv("IAS_MICRODOT", raising=False)
    calls = _run_manifest(ROOT)
    packages = {args[0]: kw for args, kw in calls["package"]}
    assert set(packages) == {"ias", "microdot"}
    ias = packages["ias"]
    assert set(ias["files"]) == _expected_modules()
    # The folder it freezes from is the package under its device name, holding firmware/'s files.
    for name in ias["files"]:
        frozen = Path(ias["base_path"]) / "ias" / name
        assert frozen.read_bytes() == (ROOT / "firmware" / name).read_bytes()
    md = packages["microdot"]
    assert tuple(md["files"]) == mplib.MICRODOT_FILES
    for name in md["files"]:
        assert (Path(md["base_path"]) / "microdot" / name).is_file()
    includes = [args[0] for args, _ in calls["include"]]
    assert includes == ["$(PORT_DIR)/boards/manifest.py", "$(MPY_DIR)/extmod/asyncio"]


def test_manifest_takes_microdot_from_ias_microdot(monkeypatch, tmp_path):
    monkeypatch.setenv("IAS_MICRODOT", str(tmp_path))
    calls = _run_manifest(ROOT)
    md = [kw for args, kw in calls["package"] if args[0] == "microdot"][0]
    assert md["base_path"] == str(tmp_path)


@pytest.mark.parametrize("chip", ["esp32", "esp8266"])
def test_romfs_image_holds_the_chips_client_and_microdot(tmp_path, chip):
    from tools import romfs

    image = tmp_path / "client.romfs"
    size = romfs.build(str(image), target=chip, build_time=1000)
    assert size == image.stat().st_size > 0
    # Read back the way a board does: vfs.VfsRom over the image's bytes, on MicroPython.
    probe = (
        "import os, vfs\n"
        "vfs.mount(vfs.VfsRom(open('%s', 'rb').read()), '/rom')\n"
        "print(sorted(os.listdir('/rom/lib/ias')))\n"
        "print(sorted(os.listdir('/rom/lib/microdot')))\n" % image
    )
    run = subprocess.run([micropython(), "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    ias = {n[:-4] + ".py" for n in eval(lines[0])}
    assert ias == set(deploy.firmware_modules(chip)) - {"boot.py", "main.py"}
    assert sorted(eval(lines[1])) == sorted(n[:-3] + ".mpy" for n in mplib.MICRODOT_FILES)


def test_esp32_romfs_partition_table_keeps_both_ota_slots_and_fits_the_image(tmp_path):
    from tools import romfs

    rows = {}
    for line in Path(romfs.ESP32_PARTITIONS).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind, sub, offset, size = [f.strip() for f in line.split(",")[:5]]
            rows[name] = (kind, sub, int(offset, 16), int(size, 16))
    # The OTA variant's slots where `ias flash` and the bootloader expect them (flashing.md).
    assert rows["ota_0"] == ("app", "ota_0", 0x10000, 0x180000)
    assert rows["ota_1"] == ("app", "ota_1", 0x190000, 0x180000)
    assert rows["otadata"][:3] == ("data", "ota", 0xD000)
    # MicroPython's esp32 port finds its ROMFS partition by data subtype 0x8f, its
    # filesystem by the label vfs.
    assert rows["romfs"][:2] == ("data", "0x8f") and rows["vfs"][:2] == ("data", "fat")
    spans = sorted((off, off + size, name) for name, (_k, _s, off, size) in rows.items())
    for (_a, end, name), (start, _b, nxt) in zip(spans, spans[1:]):
        assert end <= start, (name, nxt)  # no overlap
    assert spans[-1][1] == 4 * 1024 * 1024  # a 4 MiB chip, all of it used
    for name, (kind, _s, off, size) in rows.items():
        assert off % (0x10000 if kind == "app" else 0x1000) == 0 and size % 0x1000 == 0, name
    # Today's image for the ESP32 fits with room to grow.
    size = romfs.build(str(tmp_path / "client.romfs"), target="esp32", build_time=1000)
    assert size < rows["romfs"][3] * 0.6
