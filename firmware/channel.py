# The second transport (design §5): a signed static channel on any static host or CDN.
# channel.json = {"app", "version", "counter", "bundle", "size", "sha256", "anchors"?, "poll"?}
# and channel.json.sig (RSA PKCS#1 v1.5 SHA-256 over its exact bytes, by the update key).
# The device polls it with If-None-Match / If-Modified-Since, follows at most 5 redirects,
# downloads the bundle into a partial file on flash that survives resets (resumed with Range),
# checks size and SHA-256, then feeds the file to the same installer IAS updates use.
# Signatures decide what is installed, never the host or the TLS chain: see docs/channel.md.
import binascii
import gc
import hashlib
import json
import os

from . import fsutil, httpclient
from .reason import ReasonError, reason_of

DIR = "/staging"  # the partial download and its record
PART = "/channel.part"
META = "/channel.meta"
MAX_CHANNEL = 4096  # channel.json is small; a bigger answer is refused unread
MAX_SIG = 1024  # a 4096-bit signature is 512 bytes
MAX_REDIRECTS = 5
MAX_BUNDLE = 0x7FFFFFF  # 128 MiB: more than any ESP32 flash
BUF_SIZE = 2048  # the one buffer: response heads, body chunks, flash reads
PEEK = 512  # first bytes shown to make_installer (a tar header)
FLUSH_EVERY = 16384  # sync the partial file this often: what a power cut can cost
MARGIN = 8192  # free blocks kept for littlefs metadata and state files
CONNECT_TIMEOUT_MS = 10000
HEAD_TIMEOUT_MS = 10000
READ_TIMEOUT_MS = 10000
DEADLINE_MS = 600000  # one poll, download included
MIN_POLL = 60
MAX_POLL = 7 * 86400
REDIRECTS = (301, 302, 303, 307, 308)
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
def _origin(scheme, host, port):
    h = "[" + host + "]" if ":" in host else host
    if port == (443 if scheme == "https" else 80):
        return scheme + "://" + h
    return "%s://%s:%d" % (scheme, h, port)


def _normalise(path):
    # drop "." and resolve ".." segments of an absolute path (RFC 3986 5.2.4, simply)
    query = ""
    q = path.find("?")
    if q >= 0:
        path, query = path[:q], path[q:]
    out = []
    parts = path.split("/")
    for i, seg in enumerate(parts[1:]):
        last = i == len(parts) - 2
        if seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif seg == ".":
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out) + query


def resolve(base, ref):
    """The absolute URL of `ref` (a Location header or a bundle name) seen from `base`."""
    from . import net

    ref = ref.strip()
    low = ref[:8].lower()
    if low.startswith("http://") or low.startswith("https://"):
        net.parse_url(ref)  # ValueError when malformed
        return ref
    colon = ref.find(":")
    if 0 <= colon and colon < min(i for i in (ref.find("/"), ref.find("?"), len(ref)) if i >= 0):
        raise ValueError("unsupported scheme in %r" % ref[:40])
    scheme, host, port, path = net.parse_url(base)
    if ref.startswith("//"):
        return scheme + ":" + ref
    origin = _origin(scheme, host, port)
    if not ref:
        return origin + path
    if ref.startswith("/"):
        return origin + _normalise(ref)
    q = path.find("?")
    bare = path if q < 0 else path[:q]
    if ref.startswith("?"):
        return origin + bare + ref
    return origin + _normalise(bare[: bare.rfind("/") + 1] + ref)


def sig_url(url):
    """channel.json.sig beside channel.json (before any query string)."""
    q = url.find("?")
    return url + ".sig" if q < 0 else url[:q] + ".sig" + url[q:]


# -- HTTP with redirects -----------------------------------------------------------------------
class Fetcher:
    """GET requests through `connect(scheme, host, port, timeout_ms)`, one connection each,
    following redirects. Every answer's head lands in the one buffer."""

    def __init__(self, connect, buf, deadline=None):
        self.connect = connect
        self.buf = buf
        self.deadline = deadline
        self.requests = 0

    def _timeout(self, ms):
        if self.deadline is not None:
            left = self.deadline.left()
            if left <= 0:
                raise ReasonError("deadline")
            if left < ms:
                return left
        return ms

    def open(self, url, headers=(), signed=True):
        """(response, stream, final url) of the first non-redirect answer; the caller closes
        the stream. Redirects: at most MAX_REDIRECTS, relative Locations resolved; a step from
        https to http only when `signed` (what is fetched is verified by its signature)."""
        from . import net

        secure = False
        for _ in range(MAX_REDIRECTS + 1):
            try:
                scheme, host, port, path = net.parse_url(url)
            except ValueError as e:
                raise ReasonError("bad_url", str(e))
            if scheme == "https":
                secure = True
            elif secure and not signed:
                raise ReasonError("downgrade", "https redirected to %s" % url[:80])
            gc.collect()  # before a TLS handshake: its buffers want contiguous heap
            stream = self.connect(scheme, host, port, self._timeout(CONNECT_TIMEOUT_MS))
            try:
                self.requests += 1
                heads = [
                    ("User-Agent", "ias-micropython"),
                    ("Accept-Encoding", "identity"),
                    ("Connection", "close"),
                ]
                heads.extend(headers)
                hosthdr = _origin(scheme, host, port)
                hosthdr = hosthdr[hosthdr.find("//") + 2 :]
                httpclient.request(stream, "GET", hosthdr, path, heads)
                resp = httpclient.read_head(
                    stream, self.buf, self.deadline, self._timeout(HEAD_TIMEOUT_MS)
                )
            except BaseException:
                stream.close()
                raise
            if resp.status not in REDIRECTS:
                return resp, stream, url
            stream.close()
            loc = resp.header("location")
            if not loc:
                raise ReasonError("bad_redirect", "%d without Location" % resp.status)
            try:
                url = resolve(url, loc)
            except ValueError as e:
                raise ReasonError("bad_redirect", str(e))
        raise ReasonError("too_many_redirects", "more than %d" % MAX_REDIRECTS)

    def small(self, url, limit, headers=(), signed=True):
        """(status, body bytes or None, response) of a small document: bodies only for 200."""
        resp, stream, _ = self.open(url, headers, signed)
        try:
            if resp.status != 200:
                return resp.status, None, resp
            return 200, read_small(resp, limit, self.deadline), resp
        finally:
            stream.close()


def read_small(resp, limit, deadline=None):
    """The whole body (at most `limit` bytes): by Content-Length, or up to the close."""
    if resp.header("transfer-encoding") is not None:
        raise ReasonError("chunked", "serve the channel with a Content-Length")
    if resp.length is not None and resp.length > limit:
        raise ReasonError("too_large", "%d bytes, at most %d" % (resp.length, limit))
    out = bytearray(limit + 1 if resp.length is None else resp.length)
    got = [0]

    def sink(chunk):
        n = len(chunk)
        out[got[0] : got[0] + n] = chunk
        got[0] += n

    try:
        resp.read_body(sink, len(out), deadline, READ_TIMEOUT_MS)
    except ReasonError as e:
        if e.reason != "closed" or resp.length is not None:
            raise
        return bytes(out[: got[0]])  # no length: the body ended at the close
    if resp.length is None:
        raise ReasonError("too_large", "more than %d bytes" % limit)
    return bytes(out)


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
    try:
        doc = json.loads(data)
    except ValueError:
        raise ReasonError("bad_channel", "not JSON")
    if not isinstance(doc, dict):
        raise ReasonError("bad_channel", "not an object")
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
        info["bundle"] = resolve(base, info["bundle"])
        anchors = doc.get("anchors")
        info["anchors"] = resolve(base, anchors) if isinstance(anchors, str) and anchors else None
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


def download(fetcher, info, folder=DIR, feed=None, stats=None):
    """Bring the bundle of `info` (url, size, sha256) into folder/channel.part, resuming what
    an earlier attempt left, and verify it. Returns the path. On a hash mismatch the part is
    deleted; on a network failure it stays for the next attempt."""
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
    buf = fetcher.buf
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
        resp, stream, _ = fetcher.open(info["bundle"], heads, True)
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
            _stream_to(resp, part, mode, size - offset, sha, fetcher.deadline, feed, stats)
        finally:
            stream.close()
    got = binascii.hexlify(sha.digest()).decode()
    if got != want:
        discard(folder)
        raise ReasonError("hash_mismatch", "got %s" % got)
    return part


def _stream_to(resp, path, mode, length, sha, deadline, feed, stats):
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

        resp.read_body(sink, length, deadline, READ_TIMEOUT_MS)


def _md5():
    try:
        return hashlib.md5()
    except AttributeError:  # ESP8266 has no MD5; the installer checks SHA-256 anyway
        return None


def install(part, info, make_installer, buf, feed=None):
    """Feed the verified file to the installer chosen from its first bytes, through the one
    buffer. Returns the finished installer; aborts it on any failure."""
    view = memoryview(buf)
    size = info["size"]
    with open(part, "rb") as f:
        n = f.readinto(view[: min(PEEK, size)])
        installer = make_installer(bytes(view[:n]), True)  # the channel's signature verified
        try:
            installer.begin(size, info["app"], info["version"])
            f.seek(0)
            md5 = _md5()
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
            try:
                installer.abort()
            except Exception:
                pass
            raise
    return installer


# -- one poll ----------------------------------------------------------------------------------
def connector(device):
    """connect(scheme, host, port, timeout_ms): verified TLS for https (certstore), plain TCP
    for http. Plain HTTP is safe here because everything fetched is signed."""

    def connect(scheme, host, port, timeout_ms):
        if scheme == "http":
            from . import net

            return net.tcp_connect(host, port, timeout_ms)
        from . import certstore

        floor = device.state.get("time_floor", 0) if device.state is not None else 0
        return certstore.connect(host, port, device.store, device.board, timeout_ms, floor)

    return connect


def default_installer(device):
    """make(first, trusted) for a device without its own factory: never commits a trial (the
    installer refuses while one is pending)."""

    def make(first, trusted):
        try:
            from . import formats
        except ImportError:
            from . import staging

            return staging.StagingInstaller()
        st, slots = device.state, device.slots
        return formats.installer_for(
            first, device.board, device.settings, st, slots, None, trusted
        )

    return make


def installed(device):
    """(name, version) running now: the slot pointer's, also while on trial."""
    art = device.slots.installed_artifact()
    return art["name"], art["version"]


def check(
    device,
    url,
    connect,
    make_installer,
    keys,
    force=False,
    folder=DIR,
    feed=None,
    buf=None,
    deadline=None,
    stats=None,
):
    """One poll of the channel at `url`. Returns the outcome dict; raises on failures."""
    from . import trial, trust

    st = device.state
    name, version = installed(device)
    seen = "%s %s" % (name, version)
    memo = (st.get("channel") if st is not None else None) or {}
    if memo.get("url") != url or memo.get("seen") != seen:
        memo = {}  # validators belong to one channel and one installed version
    fetcher = Fetcher(connect, buf or bytearray(BUF_SIZE), deadline)
    if stats is not None:
        stats["fetcher"] = fetcher
    heads = []
    if not force:
        if memo.get("etag"):
            heads.append(("If-None-Match", memo["etag"]))
        if memo.get("modified"):
            heads.append(("If-Modified-Since", memo["modified"]))
    out = {"outcome": "error", "reason": "", "app": {"name": name, "version": version}}
    status, data, resp = fetcher.small(url, MAX_CHANNEL, heads, True)
    out["status"] = status
    if status == 304 and heads:
        out.update({"outcome": "up-to-date", "reason": "not modified"})
        out["poll"] = memo.get("poll")
        return out
    if status != 200:
        raise ReasonError("http_status", "%d %s" % (status, resp.reason))
    validators = {"etag": resp.header("etag"), "modified": resp.header("last-modified")}
    sstatus, sig, sresp = fetcher.small(sig_url(url), MAX_SIG, (), True)
    if sstatus != 200:
        raise ReasonError("http_status", "signature: %d %s" % (sstatus, sresp.reason))
    trust.check(data, sig, keys)  # ReasonError(bad_signature | no_keys): nothing changes
    info = parse(data, url)
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
    part = download(fetcher, info, folder, feed, stats)
    try:
        installer = install(part, info, make_installer, fetcher.buf, feed)
    except Exception as e:
        discard(folder)
        if reason_of(e) not in _TRANSIENT and st is not None:
            new["refused"] = info["sha256"]  # the same bytes would be refused again
            st.set("channel", new)
        raise
    discard(folder)
    out.update({"outcome": "updated", "reason": "", "installer": installer})
    out.update({"size": info["size"], "sha256": info["sha256"], "counter": info["counter"]})
    return out


def poll(
    device,
    force=False,
    connect=None,
    make_installer=None,
    feed=None,
    folder=DIR,
    keys_dir="/keys",
    deadline_ms=DEADLINE_MS,
    stats=None,
):
    """Poll settings["channel"] once. Returns {"outcome": "up-to-date" | "updated" |
    "no-update" | "error", "reason", "app": {"name", "version"}, "poll": seconds or None,
    "installer" (for "updated": the caller activates it and resets)}. Never raises for network,
    server or content faults; a refused or failed release changes nothing installed."""
    url = device.settings.get("channel", "")
    name, version = installed(device)
    if not url:
        return {
            "outcome": "error",
            "reason": "no_channel",
            "app": {"name": name, "version": version},
        }
    from . import trust

    deadline = httpclient.Deadline(deadline_ms, device.board.ticks_ms)
    try:
        return check(
            device,
            url,
            connect or connector(device),
            make_installer or default_installer(device),
            trust.load_keys(keys_dir),
            force,
            folder,
            feed,
            None,
            deadline,
            stats,
        )
    except Exception as e:
        out = {"outcome": "error", "reason": reason_of(e), "detail": str(e)}
        out["app"] = {"name": name, "version": version}
        return out
