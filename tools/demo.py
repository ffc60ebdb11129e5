"""`ias demo`: the whole story on a virtual ESP32, with no hardware, in under a minute.

1. The operator creates an update-signing key and the update server's CA chain (root A).
2. A virtual ESP32 that trusts only root A powers on, calls home, installs v1.1, resets and
   commits it after a verified call home on the new version.
3. The IAS incident: the server's certificate moves to a chain under root B. The device's TLS
   fails, it walks its recovery ladder, installs the signed anchor bundle (plain HTTP is fine:
   the signature authorises it), calls home again in the same cycle and takes v1.2. No button.
4. A bad v1.3 (it raises at import) is installed, fails its trial and rolls back by itself; the
   device reports the failure and does not take the same artifact again.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import REPO, anchorbundle, bundle, keys, pki, sim
from tools.server import UpdateServer

APP = "IASBlink"


class Story:
    def __init__(self, quiet=False):
        self.rows = []
        self.quiet = quiet
        self.t0 = time.monotonic()

    def say(self, text):
        print("\n== %s" % text, flush=True)

    def note(self, text):
        print("   " + text, flush=True)

    def check(self, step, expected, observed, ok):
        self.rows.append((step, expected, observed, ok))
        print("   %s %s: %s" % ("ok  " if ok else "FAIL", step, observed), flush=True)
        return ok

    def table(self):
        """The summary: each step, what was expected and what the device did, in words."""
        print("\nWhat happened")
        for step, exp, obs, ok in self.rows:
            print("  %s %s" % ("ok  " if ok else "FAIL", step))
            print("       expected: %s" % exp)
            lines = obs.split("\n")
            print("       observed: %s" % lines[0])
            for more in lines[1:]:
                print("                 %s" % more)
        took = time.monotonic() - self.t0
        passed = sum(1 for r in self.rows if r[3])
        print("\n%d of %d steps as expected, in %.1f s" % (passed, len(self.rows), took))
        return passed == len(self.rows)


# Reason codes the demo's device reports, in words (firmware/reason.py and the modules that
# raise them are the reference).
WORDS = {
    "untrusted": "the server's certificate chains to no root the device trusts",
    "expired": "a certificate in the server's chain has expired",
    "not_yet_valid": "the server's certificate is not valid yet (check the clock)",
    "name_mismatch": "the server's certificate is for another name",
    "clock_unset": "the device's clock was not set",
    "timeout": "no answer in time",
    "refused": "connection refused (nothing listens there)",
    "closed": "the server closed the connection",
    "unreachable": "the host cannot be reached",
    "not_newer": "it had nothing newer",
    "rejected": "that bundle was reverted before",
    "bad_signature": "the signature did not verify",
    "http_404": "not found there (HTTP 404)",
    "installed": "a new anchor bundle was installed",
    "nothing_new": "no location had a newer anchor bundle",
    "failed": "no location answered",
}


def in_words(code):
    return WORDS.get(code, code.replace("_", " "))


def iso(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


def explain_recovery(header):
    """x-IAS-RECOVERY ("WHY@EPOCH OUTCOME; N URL RESULT; ...") as lines a person reads."""
    lines = []
    for part in header.split("; "):
        words = part.split(" ")
        if "@" in words[0]:  # a walk of the ladder: why it started, when, how it ended
            why, _, when = words[0].partition("@")
            when = iso(when) if when.isdigit() else when
            outcome = " ".join(words[1:])
            lines.append(
                "%s: the call home failed (%s); the device walked its recovery ladder: %s"
                % (when, in_words(why), in_words(outcome))
            )
        elif len(words) >= 3 and words[0].isdigit():  # one rung: a location and its result
            result = " ".join(words[2:])
            if result.startswith("installed v"):
                result = "signed anchor bundle %s installed" % result.split(" ")[1]
            else:
                result = in_words(result)
            lines.append("  location %s %s: %s" % (words[0], words[1], result))
        else:
            lines.append(part)
    return "\n".join(lines)


def explain_error(header):
    """x-IAS-LAST-ERROR in words: "rollback: WHY" reads "rolled back: WHY"."""
    parts = []
    for part in header.split("; "):
        if part.startswith("rollback: "):
            part = "rolled back, because the " + part[len("rollback: ") :]
        else:
            part = in_words(part)
        parts.append(part)
    return "; ".join(parts)


def explain_outcome(res):
    outcome, reason = res.get("outcome"), res.get("reason") or ""
    if outcome == "no-update" and reason.startswith("refused: "):
        return "no update: the server's offer was refused, it %s" % reason[len("refused: ") :]
    if outcome == "no-update":
        return "no update (%s)" % in_words(reason)
    if outcome == "up-to-date":
        return "up to date"
    return "%s %s" % (outcome, in_words(reason)) if reason else str(outcome)


def shown(path):
    """`path` as the user typed it, relative to the current folder when it is under it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def next_steps(board):
    """Where the board is and three things to try with it, after the demo."""
    from tools.cli import COMMANDS

    here = shown(board)
    ias = ".venv/bin/ias" if (Path.cwd() / ".venv" / "bin" / "ias").exists() else "ias"
    have = {name for name, _ in COMMANDS}
    inspect = (
        ("%s status %s" % (ias, here), "its installed version, anchors and last call home")
        if "status" in have
        else ("%s sim cat %s /state.json" % (ias, here), "what it remembers (its state file)")
    )
    steps = (
        (
            "%s sim boot %s --cycles 3" % (ias, here),
            "power it on again (the demo's server is "
            "gone now: watch it retry and keep running v1.2)",
        ),
        ("%s sim config %s" % (ias, here), "its config page: open http://127.0.0.1:8080/"),
        inspect,
    )
    print("\nThe virtual ESP32 is in %s (its flash is %s/flash.bin)." % (here, here))
    print("Three things to try next:")
    for cmd, why in steps:
        print("  %s\n      %s" % (cmd, why))
    if "logs" in have:
        print("and `%s logs %s` prints its log." % (ias, here))


def _app_source(work, version, broken=False):
    src = work / ("app-%s" % version)
    shutil.copytree(REPO / "examples" / "blink", src, dirs_exist_ok=True)
    if broken:
        code = (src / "app.py").read_text()
        (src / "app.py").write_text('raise RuntimeError("v%s is broken")\n' % version + code)
    return src


def publish(work, key, version, counter, broken=False):
    """Build a signed bundle and make it the server's current artifact for the app."""
    folder = work / "artifacts" / APP
    folder.mkdir(parents=True, exist_ok=True)
    data = bundle.build(_app_source(work, version, broken), key, APP, version, counter, True)
    name = "%s-%s.tar.gz" % (APP, version)
    (folder / name).write_bytes(data)
    (folder / "current.json").write_text(
        json.dumps({"name": APP, "version": version, "file": name})
    )
    return len(data)


def device_file(board, path):
    run = sim.run_board(board, "cat", path, echo=False)
    return run.output if run.code == 0 else None


def app_pointer(board):
    text = device_file(board, "/app.json")
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {}


def boot(board, cycles, quiet):
    return sim.boot(
        sim.args_for("boot", board, cycles=cycles, max_boots=8, boot_timeout=120, quiet=quiet)
    )


def run_demo(work, quiet=False):
    story = Story(quiet)
    work = Path(work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)

    story.say("The operator creates an update-signing key and two certificate authorities")
    key_path, pub_path = keys.write_pair(work / "keys", bits=2048)
    key = keys.load_private(key_path)
    root_a = pki.make_ca("Demo Root A", org="CA family A")
    inter_a = pki.make_ca("Demo Intermediate A", org="CA family A", issuer=root_a)
    leaf_a = pki.make_leaf(inter_a)
    root_b = pki.make_ca("Demo Root B", org="CA family B")
    inter_b = pki.make_ca("Demo Intermediate B", org="CA family B", issuer=root_b)
    leaf_b = pki.make_leaf(inter_b)
    (work / "rootA.pem").write_bytes(root_a.pem)
    (work / "rootB.pem").write_bytes(root_b.pem)
    story.note("update key: %s; server chain: leaf <- Intermediate A <- Root A" % key_path)

    story.say("The operator signs an anchor bundle (roots A and B) and publishes v1.1")
    anchorbundle.build_anchor_bundle(
        key_path.read_bytes(),
        2,
        [root_a.pem, root_b.pem],
        hosts=["127.0.0.1"],
        out_dir=work / "anchors",
    )
    size = publish(work, key, "1.1", 1)
    story.note("v1.1: a signed, gzipped bundle of %d bytes" % size)

    server = UpdateServer(
        artifacts=work / "artifacts",
        anchors=work / "anchors",
        plain_port=0,
        record=work / "requests.jsonl",
    )
    server.use_chain(leaf_a, [inter_a])
    port = server.start()
    story.note(
        "ias serve: https://127.0.0.1:%d/ (and plain http://127.0.0.1:%d/)"
        % (port, server.plain_port)
    )
    try:
        return _story(story, work, server, pub_path, key, (leaf_b, [inter_b]), quiet)
    finally:
        server.stop()


def _story(story, work, server, pub_path, key, chain_b, quiet):
    board = work / "esp32"
    https = "https://127.0.0.1:%d" % server.port
    story.say("A virtual ESP32 that trusts only root A, running IASBlink 1.0")
    recovery = ["%s/ota/anchors/" % https, "http://127.0.0.1:%d/ota/anchors/" % server.plain_port]
    sim.init(
        sim.args_for(
            "init",
            board,
            server=https,
            anchor=[str(work / "rootA.pem")],
            app_name=APP,
            app_version="1.0",
            update_key=str(pub_path),
            recovery=recovery,
            force=True,
        )
    )

    story.say("Power on: the device calls home, installs v1.1, resets and commits it")
    boot(board, 3, quiet)
    ptr = app_pointer(board)
    story.check(
        "update to v1.1",
        "1.1 committed",
        "%s %s" % (ptr.get("version"), "on trial" if ptr.get("trial") else "committed"),
        ptr.get("version") == "1.1" and not ptr.get("trial"),
    )

    story.say("The IAS incident: the server's certificate moves to a chain under root B")
    server.use_chain(*chain_b)
    publish(work, key, "1.2", 2)
    story.note("v1.2 published; the device trusts only root A; nobody presses a button")
    boot(board, 3, quiet)
    ptr = app_pointer(board)
    state = device_state(board)
    story.check(
        "recover from the CA change",
        "anchor bundle v2",
        "anchor bundle v%s, %s"
        % (
            state.get("anchors_version"),
            "pending" if state.get("anchors_pending") else "confirmed",
        ),
        state.get("anchors_version") == 2 and not state.get("anchors_pending"),
    )
    reported = header_seen(server, "x-IAS-RECOVERY")
    story.check(
        "recovery reported home",
        "the device tells the server how it recovered (x-IAS-RECOVERY)",
        explain_recovery(reported) if reported else "nothing was reported",
        reported is not None,
    )
    story.check(
        "update to v1.2 after recovery",
        "1.2 committed",
        "%s %s" % (ptr.get("version"), "on trial" if ptr.get("trial") else "committed"),
        ptr.get("version") == "1.2" and not ptr.get("trial"),
    )

    story.say("A bad v1.3 (it raises at import) is published")
    publish(work, key, "1.3", 3, broken=True)
    boot(board, 3, quiet)
    ptr = app_pointer(board)
    story.check(
        "bad v1.3 rolls back",
        "back on 1.2",
        "running %s" % ptr.get("version"),
        ptr.get("version") == "1.2" and not ptr.get("trial"),
    )
    error = header_seen(server, "x-IAS-LAST-ERROR")
    story.check(
        "failure reported home",
        "the device tells the server v1.3 failed (x-IAS-LAST-ERROR)",
        explain_error(error) if error else "nothing was reported",
        error is not None and "1.3" in error,
    )
    story.say("The server still offers v1.3: a forced call home (like a short button press)")
    run = sim.run_board(board, "callhome", echo=False)
    res = run.result or {}
    story.check(
        "bad v1.3 not taken again",
        "no update: v1.3 refused",
        explain_outcome(res),
        res.get("outcome") == "no-update" and "refused" in (res.get("reason") or ""),
    )
    ok = story.table()
    next_steps(board)
    return ok


def header_seen(server, name):
    """The last value the device sent in header `name`, or None."""
    for rec in reversed(server.requests):
        for key, value in rec["headers"]:
            if key.lower() == name.lower():
                return value
    return None


def device_state(board):
    try:
        return json.loads(device_file(board, "/state.json") or "{}")
    except ValueError:
        return {}


def demo(args):
    ok = run_demo(args.work, args.quiet)
    return 0 if ok else 1


def add_parser(subparsers, summary):
    p = subparsers.add_parser(
        "demo",
        help=summary,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--work",
        default=str(REPO / "build" / "demo"),
        help="folder for keys, artifacts and the virtual board (replaced)",
    )
    p.add_argument("--quiet", action="store_true", help="hide the device's console")
    p.set_defaults(func=demo)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="demo")
    add_parser(parser.add_subparsers(dest="command"), "run the demo")
    args = parser.parse_args(["demo"] + sys.argv[1:])
    sys.exit(args.func(args))
