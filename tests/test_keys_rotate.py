"""`ias keys rotate`: keys.json + keys.json.sig from the CLI, checked with the device's verifier;
each bad input is one line on stderr and leaves no output folder. The device installing the
CLI's document end to end: tests/test_continuity_e2e.py::test_update_key_rotated."""

import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from tools import cli, keys


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rotkeys")
    keys.write_pair(root / "old", bits=2048)
    keys.write_pair(root / "new", bits=2048)
    return root


def rotate(*args):
    return cli.main(["keys", "rotate", *map(str, args)])


def rotate_old_to_new(pairs, version, out):
    """The usual rotation of these tests: the old key hands over to the new public key."""
    key, new = pairs / "old/update.key", pairs / "new/update.pub"
    return rotate("--key", key, "--new", new, "--version", version, "-o", out)


def test_rotate_writes_a_document_the_old_key_signed(pairs, tmp_path):
    out = tmp_path / "site" / "ota" / "anchors"
    old, new = pairs / "old", pairs / "new"
    assert (
        rotate(
            "--key",
            old / "update.key",
            "--new",
            new / "update.pub",
            "--version",
            3,
            "--until",
            "2031-01-02",
            "-o",
            out,
        )
        == 0
    )
    doc = json.loads((out / "keys.json").read_bytes())
    assert doc == {
        "kind": "keys",
        "version": 3,
        "keys": [(new / "update.pub").read_text()],
        "transition_until": "2031-01-02T00:00:00Z",
    }
    pub = serialization.load_pem_public_key((old / "update.pub").read_bytes())
    pub.verify(
        (out / "keys.json.sig").read_bytes(),
        (out / "keys.json").read_bytes(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_until_defaults_to_thirty_days(pairs, tmp_path):
    import time

    assert rotate_old_to_new(pairs, 1, tmp_path / "o") == 0
    from tools.anchorbundle import parse_when

    until = json.loads((tmp_path / "o/keys.json").read_bytes())["transition_until"]
    assert abs(parse_when(until).timestamp() - (time.time() + 30 * 86400)) < 120


def _garbage(d):
    (d / "g.pem").write_text("hello, not a key\n")
    return d / "g.pem"


def _bad_body(d):
    (d / "b.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    return d / "b.pem"


@pytest.mark.parametrize(
    "case, message",
    [
        ("pub_as_key", "{x} is a public key; --key needs the current private key"),
        ("key_as_new", "{x} is a private key; --new takes the new public key (.pub)"),
        ("missing_key", "{x}: no such file"),
        ("missing_new", "{x}: no such file"),
        ("garbage_key", "{x} is not a PEM key"),
        ("garbage_new", "{x} is not a PEM key"),
        ("bad_pem_new", "{x} is not a readable PEM key"),
        ("bad_until", "--until {x}: want YYYY-MM-DD, ISO date-time or Unix seconds"),
        ("zero_version", "--version must be 1 or more (above the last keys.json)"),
        ("five_keys", "give 1 to 4 new public keys"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(pairs, tmp_path, capsys, case, message):
    key, new = pairs / "old/update.key", pairs / "new/update.pub"
    news, until, version, x = [new], "2031-01-01", 1, None
    if case == "pub_as_key":
        key = x = pairs / "old/update.pub"
    elif case == "key_as_new":
        news = [x] = [pairs / "new/update.key"]
    elif case == "missing_key":
        key = x = tmp_path / "nope.key"
    elif case == "missing_new":
        news = [x] = [tmp_path / "nope.pub"]
    elif case == "garbage_key":
        key = x = _garbage(tmp_path)
    elif case == "garbage_new":
        news = [x] = [_garbage(tmp_path)]
    elif case == "bad_pem_new":
        news = [x] = [_bad_body(tmp_path)]
    elif case == "bad_until":
        until = x = "next tuesday"
    elif case == "zero_version":
        version = 0
    elif case == "five_keys":
        news = [new] * 5
    out = tmp_path / "out"
    args = ["--key", key, "--version", version, "--until", until, "-o", out]
    for n in news:
        args += ["--new", n]
    assert rotate(*args) == 2
    err = capsys.readouterr().err
    assert err == "ias keys: error: %s\n" % message.format(x=x)
    assert not out.exists()


DEVICE_SCRIPT = r"""
import sys, time
from ias import keyrotation, trust
from ias.reason import reason_of

class State(dict):
    def set(self, k, v):
        self[k] = v

out, keys_dir = sys.argv[1], sys.argv[2]
doc = open(out + "/keys.json", "rb").read()
sig = open(out + "/keys.json.sig", "rb").read()
state = State()
print(keyrotation.rotate_key(doc, sig, trust.load_keys(keys_dir), state, time.time(), keys_dir))
try:
    keyrotation.rotate_key(doc, sig, trust.load_keys(keys_dir), state, time.time(), keys_dir)
except Exception as e:
    print("again:", reason_of(e))
try:
    keyrotation.rotate_key(doc.replace(b'"version":5', b'"version":6'), sig,
                           trust.load_keys(keys_dir), State(), time.time(), keys_dir)
except Exception as e:
    print("tampered:", reason_of(e))
"""


def test_the_device_code_installs_what_the_cli_wrote(pairs, tmp_path):
    # firmware/keyrotation.py in the real micropython: the CLI's document is accepted by a device
    # holding only the old key, and writes the new key beside it; replayed or tampered, refused.
    import os
    import subprocess

    from mprunner import micropython_binary

    from tools import pkg_path

    device_keys = tmp_path / "keys"
    device_keys.mkdir()
    (device_keys / "update.pub").write_bytes((pairs / "old/update.pub").read_bytes())
    assert rotate_old_to_new(pairs, 5, tmp_path / "out") == 0
    script = tmp_path / "rotate_check.py"
    script.write_text(DEVICE_SCRIPT)
    r = subprocess.run(
        [micropython_binary(), str(script), str(tmp_path / "out"), str(device_keys)],
        capture_output=True,
        text=True,
        env=dict(os.environ, MICROPYPATH="%s:.frozen" % pkg_path()),
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "I keys: update keys v5 accepted (signed by update)",
        "['k5-0.pub']",
        "again: not_newer",
        "tampered: bad_signature",
    ]
    assert (device_keys / "k5-0.pub").read_text() == (pairs / "new/update.pub").read_text()
    assert (device_keys / "update.pub").exists()  # the old key stays for the transition
