"""`make -n` of a Makefile target as a user's shell would print it, for tests of what a recipe
says before each step."""

import os
import subprocess

from tools import REPO

# Set when the suite itself runs under `make test`; a child make would then print its
# "Entering directory" lines and inherit the parent's flags.
_PARENT_MAKE = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def dry_run(target, venv):
    """The lines `make -n -B TARGET VENV=venv` prints, run as if typed in a shell."""
    env = {k: v for k, v in os.environ.items() if k not in _PARENT_MAKE}
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", target, "VENV=%s" % venv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return proc.stdout.splitlines()
