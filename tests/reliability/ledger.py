"""Cases tried and survived, for docs/reliability.md. Tests call record(); when the environment
names a ledger file (IAS_RELIABILITY_LEDGER, set by tools/reliability.py) each case is appended
there as one JSON line, otherwise nothing is written."""

import json
import os

ENV = "IAS_RELIABILITY_LEDGER"


def record(category, case, survived, **figures):
    path = os.environ.get(ENV)
    if not path:
        return
    row = {"category": category, "case": case, "survived": bool(survived)}
    row.update(figures)
    with open(path, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
