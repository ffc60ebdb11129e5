"""The Debian packages the test suite runs, installed with apt-get when missing.

    python3 tools/sysdeps.py            # `make test` runs this first
    python3 tools/sysdeps.py --check    # only say what is missing (exit 1 if anything is)

nginx (tests/nginxhost.py: the static channel against a real web server), chromium (the config
page in a real browser) and faketime (moving the TLS client's clock). Prints one line: what it
installs, or that all are present; fails with one line saying what to run when it cannot (not
root, no apt-get, apt-get failed). The browser tests fail rather than skip while chromium is
missing on a machine that could install it (tests/conftest.py). Standard library only: it runs
before the virtualenv exists.
"""

import os
import shutil
import subprocess
import sys

# (what the tests run, the Debian package that brings it)
NEEDED = (
    ("/usr/sbin/nginx", "nginx-light"),
    ("/usr/bin/chromium", "chromium"),
    ("faketime", "faketime"),
)


def present(what):
    if what.startswith("/"):
        return os.access(what, os.X_OK)
    return shutil.which(what) is not None


def missing():
    """The Debian packages to install, in NEEDED's order, without repeats."""
    out = []
    for what, package in NEEDED:
        if not present(what) and package not in out:
            out.append(package)
    return out


def installable():
    """True when this machine installs Debian packages (apt-get), so nothing needs skipping."""
    return shutil.which("apt-get") is not None


def install(packages, run=subprocess.run):
    """apt-get update, then install `packages`. Returns an error line, or None when done."""
    names = " ".join(packages)
    if not shutil.which("apt-get"):
        return (
            "no apt-get here: install %s with your system's package manager, then run "
            "`make test` again" % names
        )
    if os.geteuid() != 0:
        return "not root: run `sudo apt-get install -y %s`, then `make test` again" % names
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    steps = (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + packages,
    )
    for cmd in steps:
        proc = run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            last = (proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
            return "`%s` failed (exit %d): %s" % (" ".join(cmd), proc.returncode, last[0])
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    packages = missing()
    if not packages:
        print("sysdeps: %s present" % ", ".join(dict.fromkeys(p for _, p in NEEDED)), flush=True)
        return 0
    if "--check" in argv:
        print("sysdeps: missing Debian packages: %s" % " ".join(packages))
        return 1
    print("sysdeps: installing %s (apt-get)" % " ".join(packages), flush=True)
    error = install(packages)
    if error is None:
        still = missing()
        if still:
            error = "still missing after apt-get: %s" % " ".join(still)
    if error is not None:
        print("sysdeps: " + error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
