# The second transport (design §5): a signed static channel on any static host or CDN.
# channel.json = {"app", "version", "counter", "bundle", "size", "sha256", "anchors"?, "poll"?}
# and channel.json.sig (RSA PKCS#1 v1.5 SHA-256 over its exact bytes, by the update key).
# The device polls it through the transport (transport.py: redirects, timeouts, minimum rate)
# with If-None-Match / If-Modified-Since (not while a version is on trial: its confirmation is a
# signature that verifies in this poll, never a bare 304), downloads the bundle into a partial
# file on flash that survives resets (resumed with Range),
# checks size and SHA-256, then feeds the file to the same installer IAS updates use.
# Signatures decide what is installed, never the host or the TLS chain: see docs/channel.md.
import binascii
import hashlib
import json
import os

from . import fsutil, transport
from .installer import abort_quietly, new_md5
from .reason import ReasonError, reason_of

DIR = "/staging"  # the partial download and its record
PART = "/channel.part"
META = "/channel.meta"
MAX_CHANNEL = 4096  # channel.json is small; a bigger answer is refused unread
MAX_SIG = 1024  # a 4096-bit signature is 512 bytes
MAX_BUNDLE = 0x7FFFFFF  # 128 MiB: more than any ESP32 flash
BUF_SIZE = 2048  # the one buffer: response heads, body chunks, flash reads
PEEK = 512  # first bytes shown to make_installer (a tar header)
FLUSH_EVERY = 16384  # sync the partial file this often: what a power cut can cost
MARGIN = 8192  # free blocks kept for littlefs metadata and state files
READ_TIMEOUT_MS = 10000
MIN_POLL = 60
MAX_POLL = 7 * 86400
# Failures of the installer that say nothing about the release itself: retry the same file.
_TRANSIENT = (
    "too_large",
    "no_space",
    "io_error",
    "no_memory",
    "timeout",
    "deadline",
    "trial_pending",
    "verify_failed",
)


# -- URLs ------------------------------------------------------------------------------------
def sig_url(url):
    """channel.json.sig beside channel.json (before any query string)."""
    q = url.find("?")
    return url + ".sig" if q < 0 else url[:q] + ".sig" + url[q:]


# -- the channel document ----------------------------------------------------------------------
def _hex64(text):
    if not isinstance(text, str) or len(text) != 64:
        return False
    for c in text:
        if c not in "0123456789abcdef":
            return False
    return True


def parse(data, base):
    """The checked channel document (signature already verified); URLs made absolute."""
    from . import trust

    try:
        doc = json.loads(data)
    except ValueError:
        raise ReasonError("bad_channel", "not JSON")
    if not isinstance(doc, dict):
        raise ReasonError("bad_channel", "not an object")
    trust.check_kind(doc, "channel")
    info = {}
    for key in ("app", "version", "bundle"):
        v = doc.get(key)
        if not isinstance(v, str) or not v or len(v) > 200:
            raise ReasonError("bad_channel", "%s missing or not text" % key)
        info[key] = v
    counter = doc.get("counter", 0)
    size = doc.get("size")
    if not isinstance(counter, int) or isinstance(counter, bool) or counter < 0:
        raise ReasonError("bad_channel", "counter")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_BUNDLE:
        raise ReasonError("bad_channel", "size")
    sha = doc.get("sha256")
    if not _hex64(sha):
        raise ReasonError("bad_channel", "sha256 must be 64 lower-case hex digits")
    info.update({"counter": counter, "size": size, "sha256": sha})
    try:
        info["bundle"] = transport.resolve(base, info["bundle"])
        anchors = doc.get("anchors")
        info["anchors"] = (
            transport.resolve(base, anchors) if isinstance(anchors, str) and anchors else None
        )
    except ValueError as e:
        raise ReasonError("bad_channel", str(e))
    poll = doc.get("poll")
    if isinstance(poll, int) and not isinstance(poll, bool):
        info["poll"] = min(max(poll, MIN_POLL), MAX_POLL)
    else:
        info["poll"] = None
    return info


# -- the resumable download --------------------------------------------------------------------
def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _free(folder):
    st = os.statvfs(folder)
    return st[0] * st[4]


def discard(folder=DIR):
    """Forget the partial download (the file first: a record without a file is harmless)."""
    fsutil.remove(folder + PART)
    fsutil.remove(folder + META)


def _hash_file(path, length, sha, buf, feed=None):
    view = memoryview(buf)
    done = 0
    with open(path, "rb") as f:
        while done < length:
            want = min(len(buf), length - done)
            n = f.readinto(view[:want])
            if not n:
                raise ReasonError("short_file", "%s ends at %d" % (path, done))
            sha.update(view[:n])
            done += n
            if feed is not None:
                feed()


def _content_range(value, offset, size):
    # "bytes <first>-<last>/<total>" must continue exactly where the file on flash ends
    if not value or not value.startswith("bytes "):
        return False
    spec = value[6:].strip()
    dash = spec.find("-")
    slash = spec.find("/")
    if dash < 0 or slash < dash:
        return False
    first, last, total = spec[:dash], spec[dash + 1 : slash], spec[slash + 1 :]
    if not (first.isdigit() and last.isdigit() and total.isdigit()):
        return False
    return int(first) == offset and int(last) == size - 1 and int(total) == size


def download(net, info, buf, folder=DIR, feed=None, stats=None, deadline=None):
    """Bring the bundle of `info` (url, size, sha256) into folder/channel.part through the
    transport `net`, resuming what an earlier attempt left, and verify it. Returns its path.
    On a hash mismatch the part is deleted; on a network failure it stays for the next
    attempt."""
    part, meta_path = folder + PART, folder + META
    size, want = info["size"], info["sha256"]
    meta = {"url": info["bundle"], "size": size, "sha256": want}
    fsutil.makedirs(folder)
    if _load_json(meta_path) != meta:
        discard(folder)  # a different release (or none): start afresh
        fsutil.write_atomic(meta_path, json.dumps(meta))
    offset = _size(part)
    if offset < 0 or offset > size:
        fsutil.remove(part)
        offset = 0
    sha = hashlib.sha256()
    if offset:
        _hash_file(part, offset, sha, buf, feed)  # the hash covers the whole file
    if stats is not None:
        stats["resumed_from"] = offset
    if offset < size:
        if size - offset + MARGIN > _free(folder):
            raise ReasonError(
                "no_space", "%d bytes to fetch, %d free" % (size - offset, _free(folder))
            )
        heads = [("Range", "bytes=%d-" % offset)] if offset else []
        resp = net.get(info["bundle"], heads, True, buf=buf, deadline=deadline)
        try:
            if resp.status == 206 and offset:
                if not _content_range(resp.header("content-range"), offset, size) or (
                    resp.length is not None and resp.length != size - offset
                ):
                    raise ReasonError("bad_range", resp.header("content-range") or "none")
                mode = "ab"
            elif resp.status == 200:
                if resp.length != size:
                    raise ReasonError(
                        "size_mismatch", "%s bytes, channel says %d" % (resp.length, size)
                    )
                if offset:  # the server ignored Range: start again from 0
                    sha = hashlib.sha256()
                    offset = 0
                mode = "wb"
            elif resp.status == 416:
                discard(folder)
                raise ReasonError("bad_range", "416 at offset %d" % offset)
            else:
                raise ReasonError("http_status", "%d %s" % (resp.status, resp.reason))
            if stats is not None:
                stats["status"] = resp.status
                stats["fetched"] = 0
            _stream_to(resp, part, mode, size - offset, sha, feed, stats)
        finally:
            resp.close()
    got = binascii.hexlify(sha.digest()).decode()
    if got != want:
        discard(folder)
        raise ReasonError("hash_mismatch", "got %s" % got)
    return part


def _stream_to(resp, path, mode, length, sha, feed, stats):
    with open(path, mode) as f:
        state = [0]  # bytes since the last sync

        def sink(chunk):
            sha.update(chunk)
            n = f.write(chunk)
            if n is not None and n != len(chunk):
                raise ReasonError("no_space", "short write")
            state[0] += len(chunk)
            if stats is not None:
                stats["fetched"] += len(chunk)
            if state[0] >= FLUSH_EVERY:
                f.flush()  # littlefs: this commits the file so far; a power cut keeps it
                state[0] = 0
            if feed is not None:
                feed()

        resp.read_body(sink, length, None, READ_TIMEOUT_MS)  # resp.deadline: scaled to length


def install(part, info, make_installer, buf, feed=None):
    """Feed the verified file to the installer chosen from its first bytes
    (make_installer(first, trusted): the channel's signature verified, so trusted), through the
    one buffer. Returns the finished installer;
    aborts it on any failure."""
    view = memoryview(buf)
    size = info["size"]
    with open(part, "rb") as f:
        n = f.readinto(view[: min(PEEK, size)])
        installer = make_installer(bytes(view[:n]), True)  # the channel's signature verified
        try:
            installer.begin(size, info["app"], info["version"])
            f.seek(0)
            md5 = new_md5()
            sha = hashlib.sha256()
            done = 0
            while done < size:
                n = f.readinto(view[: min(len(buf), size - done)])
                if not n:
                    raise ReasonError("short_file", "part ends at %d" % done)
                chunk = view[:n]
                sha.update(chunk)
                if md5 is not None:
                    md5.update(chunk)
                installer.write(chunk)
                done += n
                if feed is not None:
                    feed()
            digest = sha.digest()
            if binascii.hexlify(digest).decode() != info["sha256"]:
                raise ReasonError("hash_mismatch", "on the second read")  # flash changed
            md5_hex = "" if md5 is None else binascii.hexlify(md5.digest()).decode()
            installer.finish(md5_hex, digest)  # the installers take the raw SHA-256 digest
        except BaseException:
            abort_quietly(installer)
            raise
    return installer


# -- one poll ----------------------------------------------------------------------------------
def installed(device):
    """(name, version) running now: the slot pointer's, also while on trial."""
    art = device.slots.installed_artifact()
    return art["name"], art["version"]


def check(
    device,
    url,
    net,
    make_installer,
    keys,
    force=False,
    folder=DIR,
    feed=None,
    buf=None,
    deadline=None,
    stats=None,
):
    """One poll of the channel at `url` through the transport `net`. Returns the outcome dict,
    with "trusted": channel.json fetched in this poll carried a signature that verified with the
    update keys (over http or https alike); raises on failures."""
    from . import trial, trust

    st = device.state
    name, version = installed(device)
    seen = "%s %s" % (name, version)
    memo = (st.get("channel") if st is not None else None) or {}
    if memo.get("url") != url or memo.get("seen") != seen:
        memo = {}  # validators belong to one channel and one installed version
    buf = buf or bytearray(BUF_SIZE)
    if stats is not None:
        stats["transport"] = net
    heads = [
        ("User-Agent", "ias-micropython"),
        ("Accept-Encoding", "identity"),
        ("Connection", "close"),
    ]
    # A version on trial is confirmed by a signature verified in this poll, never a bare 304.
    conditional = not force and not trial.pending(device.slots)
    if conditional and memo.get("etag"):
        heads.append(("If-None-Match", memo["etag"]))
    if conditional and memo.get("modified"):
        heads.append(("If-Modified-Since", memo["modified"]))
    out = {"outcome": "error", "reason": "", "app": {"name": name, "version": version}}
    out["trusted"] = False
    resp = net.get(url, heads, True, buf=buf, deadline=deadline)
    try:
        out["status"] = resp.status
        out["anchored"] = getattr(resp, "anchored", None)  # "new": verified by a pending set
        if resp.status == 304 and len(heads) > 3:
            out.update({"outcome": "up-to-date", "reason": "not modified"})
            out["poll"] = memo.get("poll")
            return out
        if resp.status != 200:
            raise ReasonError("http_status", "%d %s" % (resp.status, resp.reason))
        validators = {"etag": resp.header("etag"), "modified": resp.header("last-modified")}
        data = transport.read_all(resp, MAX_CHANNEL)
    finally:
        resp.close()
    sig = net.fetch(sig_url(url), MAX_SIG, heads[:3], True)
    trust.check(data, sig, keys)  # ReasonError(bad_signature | no_keys): nothing changes
    info = parse(data, url)  # ReasonError(wrong_kind) for another kind of signed document
    out["trusted"] = True
    out["poll"] = info["poll"]
    out["anchors"] = info["anchors"]
    new = {"url": url, "seen": seen, "poll": info["poll"], "anchors": info["anchors"]}
    for k in ("etag", "modified"):
        if validators[k]:
            new[k] = validators[k]
    verdict = None
    if info["app"] == name and info["version"] == version:
        verdict = ("up-to-date", "version %s" % version)
    elif info["counter"] < trial.counter_floor(st, device.slots, "app"):
        verdict = ("no-update", "counter %d below the floor" % info["counter"])
    elif memo.get("refused") == info["sha256"]:
        verdict = ("no-update", "this bundle was refused before")
        new["refused"] = info["sha256"]
    if verdict is not None:
        out["outcome"], out["reason"] = verdict
        if st is not None:
            st.set("channel", new)  # writes only when something changed
        return out
    out["app"] = {"name": info["app"], "version": info["version"]}
    part = download(net, info, buf, folder, feed, stats, deadline)
    try:
        installer = install(part, info, make_installer, buf, feed)
    except Exception as e:
        discard(folder)
        why = reason_of(e)
        if why not in _TRANSIENT and st is not None:
            new["refused"] = info["sha256"]  # the same bytes would be refused again
            st.set("channel", new)
        if why == "failed_trial":  # the same signed release failed its trial here: not an error
            out["outcome"], out["reason"] = "no-update", "refused: failed its trial before"
            return out
        raise
    discard(folder)
    out.update({"outcome": "updated", "reason": "", "installer": installer})
    out.update({"size": info["size"], "sha256": info["sha256"], "counter": info["counter"]})
    return out


def poll(
    device,
    make_installer,
    force=False,
    net=None,
    feed=None,
    folder=DIR,
    keys_dir="/keys",
    stats=None,
):
    """Poll settings["channel"] once through the transport `net` (default: the device's).
    make_installer(first_bytes, trusted) chooses the installer. Returns {"outcome":
    "up-to-date" | "updated" | "no-update" | "error", "reason", "trusted", "app": {"name",
    "version"}, "poll": seconds or None, "installer" (for "updated": the caller activates it and
    resets)}. Never raises for network, server or content faults; a refused or failed release
    changes nothing installed."""
    url = device.settings.get("channel", "")
    name, version = installed(device)
    if not url:
        return {
            "outcome": "error",
            "reason": "no_channel",
            "trusted": False,
            "app": {"name": name, "version": version},
        }
    from . import trust

    if net is None:
        net = device.transport
    try:
        return check(
            device,
            url,
            net,
            make_installer,
            trust.load_keys(keys_dir),
            force,
            folder,
            feed,
            None,
            None,
            stats,
        )
    except Exception as e:
        out = {"outcome": "error", "reason": reason_of(e), "detail": str(e), "trusted": False}
        out["app"] = {"name": name, "version": version}
        return out
