# Update-key rotation (design §6): a keys.json signed by a current update key brings the next
# keys; they are written beside the old ones, which are retired once the document's transition
# window has passed by authenticated time (the time floor, never the board's clock: an NTP
# answer far ahead must not retire keys early). Looked for at the recovery locations when a
# signature fails.
import json
import os

from . import board as board_mod
from . import fsutil, log, timefloor, trust
from .anchorset import MAX_SIG, parse_time, signature_bytes
from .reason import ReasonError, const, reason_of

KEYS_DOC = "keys.json"
MAX_KEYS_DOC = const(8192)
MAX_KEYS = const(4)  # keys in one document
RATE_S = const(6 * 3600)  # scheduled looks at most this often; a forced look always runs


def fetch_keys(fetch, base, state, now, keys_dir="/keys"):
    """Fetch keys.json at the location `base` and rotate to its keys: a document signed by a
    key we do not know yet may be next to one that a key we know signed. True when new keys
    were installed; a failure is logged, never raised."""
    try:
        doc = fetch(base + KEYS_DOC, MAX_KEYS_DOC)
        sig = fetch(base + KEYS_DOC + ".sig", MAX_SIG)
        rotate_key(doc, sig, trust.load_keys(keys_dir), state, now, keys_dir)
        return True
    except Exception as e:
        log.info("keys", "%s%s: %s" % (base, KEYS_DOC, reason_of(e, type(e).__name__)))
        return False


def look_for_keys(device, fetch, locations, force=False, keys_dir="/keys"):
    """An update was refused for its signature while TLS still works: perhaps the update key
    rotated. Try keys.json at each of `locations` (anchors.recovery_locations; at most every
    RATE_S unless forced). True when a new key was installed, so the caller can call home
    again."""
    state = device.state
    now = board_mod.trusted_time(device.board, state.get("time_floor", 0))
    last = state.get("keys_checked_at")
    if now is None or (not force and last is not None and 0 <= now - last < RATE_S):
        return False
    state.set("keys_checked_at", now)
    for base in locations:
        if fetch_keys(fetch, base, state, now, keys_dir):
            return True
    return False


def rotate_key(doc_bytes, sig, keys, state, now, folder="/keys"):
    """Accept keys.json {"kind": "keys", "version", "keys": [PEM], "transition_until"} when a
    current key signed it and its version is above the last one. The new keys are written
    (each atomically) beside the old; the old ones are retired once `transition_until` has
    passed (retire_keys). Returns the new key file names; ReasonError otherwise."""
    if now is None:
        raise ReasonError("clock_unset")
    if len(doc_bytes) > MAX_KEYS_DOC:
        raise ReasonError("oversized", "keys document of %d bytes" % len(doc_bytes))
    signer = trust.check(doc_bytes, signature_bytes(sig), keys)
    try:
        doc = json.loads(bytes(doc_bytes).decode())
    except (ValueError, UnicodeError, TypeError) as e:
        raise ReasonError("malformed", str(e))
    if not isinstance(doc, dict):
        raise ReasonError("malformed", "not an object")
    trust.check_kind(doc, "keys")
    try:
        version = doc["version"]
        pems = doc["keys"]
        until = parse_time(doc.get("transition_until") or now)
    except (ValueError, UnicodeError, KeyError, TypeError) as e:
        raise ReasonError("malformed", str(e))
    if not isinstance(version, int) or isinstance(version, bool) or not isinstance(pems, list):
        raise ReasonError("malformed", "version / keys")
    last = (state.get("keys_doc") or {}).get("version", 0)
    if version <= last:
        raise ReasonError("not_newer", "keys v%d, have v%d" % (version, last))
    if not pems or len(pems) > MAX_KEYS:
        raise ReasonError("malformed", "1 to %d keys" % MAX_KEYS)
    names = []
    for i, pem in enumerate(pems):
        try:
            trust.key_from_pem(pem)
        except (ReasonError, ValueError, TypeError) as e:
            raise ReasonError("malformed", "key %d: %s" % (i, e))
        names.append("k%d-%d.pub" % (version, i))
    fsutil.makedirs(folder)
    for name, pem in zip(names, pems):
        fsutil.write_atomic(folder + "/" + name, pem)
    state.set("keys_doc", {"version": version, "names": names, "until": until})
    log.info("keys", "update keys v%d accepted (signed by %s)" % (version, signer))
    retire_keys(state, folder)
    return names


def retire_keys(state, folder="/keys"):
    """Once the time floor (authenticated time, timefloor.py) has passed the transition
    window, remove update keys the last keys.json did not list; never when none of its keys
    is on disk and usable. Returns the removed file names."""
    doc = state.get("keys_doc")
    if not doc or timefloor.floor(state) < doc.get("until", 0):
        return []
    present = [k.name + ".pub" for k in trust.load_keys(folder)]
    if not any(n in present for n in doc["names"]):
        return []
    gone = []
    for name in present:
        if name not in doc["names"]:
            os.remove(folder + "/" + name)
            gone.append(name)
    if gone:
        log.info("keys", "retired update keys %s" % ", ".join(gone))
    return gone
