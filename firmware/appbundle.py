# App bundles: a tar (or tar.gz) whose signed manifest names every file with its size and
# SHA-256. Verified before any file is written, unpacked into the inactive slot, switched by one
# atomic write of the slot pointer (trial.begin). Loaded only when a bundle arrives.
import binascii
import hashlib
import json

from . import fsutil, log, trial
from .installer import FLASH_BLOCK, Installer, unsigned_policy
from .reason import ReasonError

MAX_MANIFEST = 8192
MAX_SIG = 512
MAX_FILES = 200
BUF = 1024  # the one copy buffer of a bundle install (gzip bodies)


# -- app bundles --------------------------------------------------------------------------------
class BundleInstaller(Installer):
    """A plain tar body is parsed while it arrives (tarstream.TarFeed): manifest.json and
    manifest.sig are held in RAM (bounded), the signature and the manifest are checked, and only
    then is each file written straight into the inactive slot, its size and SHA-256 checked on
    the way, so the body is written to flash once. A gzip body is staged in /ota.part and fed
    through the same checks from the decompressor in finish() (deflate pulls from a stream)."""

    kind = "bundle"

    def __init__(self, board, settings, state, slots, keys=None, verified=False):
        Installer.__init__(self, board, settings, state, slots, keys, verified)
        self.f = None  # the staging file (gzip bodies)
        self.tar = None  # the TarFeed of a plain body
        self.head = b""  # the first bytes, until gzip or not is known
        self.gzhead = None  # a gzip body's first bytes, until its window is known
        self.slot = None
        self.failed = None
        self.manifest = None
        self.raw = None  # manifest.json, then manifest.sig, held until the signature check
        self.sig = None
        self.held = None  # which of the two is filling, and how far
        self.hfill = 0
        self.out = None  # the slot file being written, its hash and expected digest
        self.h = None
        self.want = None
        self.seen = None
        self.fed = 0  # archive bytes given to the tar parser (inflated ones for gzip)
        self.bound = None  # ... and the most the signed manifest allows (archive_bound)
        self.ident = None  # what the signature covers (trial.identity)

    def begin(self, size, name, version):
        self.start(size, name, version)
        if self.keys is None:  # now, while the heap is in one piece (the check comes later)
            from . import trust

            self.keys = trust.load_keys(self.slots.keys_dir)
        s = self.slots
        fsutil.remove(s.staging)
        self.slot = s.inactive()
        fsutil.rmtree(s.path(self.slot))  # the version before the active one: not needed now
        free = s.free()
        if size + 2 * FLASH_BLOCK > free:
            raise ReasonError("no_space", "%d bytes to stage, %d free" % (size, free))

    def write(self, chunk):
        if self.failed is not None:
            raise self.failed
        self.got += len(chunk)
        if self.got > self.size:
            raise ReasonError("too_large", "more than the announced %d bytes" % self.size)
        if self.f is not None:
            if self.gzhead is not None:
                self._early_window(chunk)
            self.f.write(chunk)
        elif self.tar is not None:
            self._feed(chunk)
        else:
            need = 2 - len(self.head)  # gzip or not shows in the first two bytes
            self.head += bytes(chunk[:need])
            if len(self.head) == 2:
                self._route(chunk[need:])

    def _route(self, rest):
        """gzip or plain is known from self.head: open the staging file or the parser."""
        from .tarstream import TarFeed

        head, self.head = self.head, None
        if head[:2] == b"\x1f\x8b":
            self.gzhead = head
            self._early_window(rest)
            self.f = open(self.slots.staging, "wb")
            self.f.write(head)
            self.f.write(rest)
            return
        self.tar = TarFeed(self)
        self._feed(head)
        self._feed(rest)

    def _early_window(self, chunk):
        """A gzip whose window this board cannot afford is refused as soon as its header is in
        (finish() would refuse it too, but only after the whole body was staged)."""
        from .tarstream import GZIP_HEAD_MAX, check_window, header_len, window_bits

        h = self.gzhead + bytes(chunk[: GZIP_HEAD_MAX - len(self.gzhead)])
        if len(h) < header_len(h) and self.got < self.size:
            self.gzhead = h
            return
        self.gzhead = None
        try:
            check_window(window_bits(h), self.board.deflate_wbits)
        except ReasonError as e:
            if self.f is not None:
                self.f.close()  # the staging file goes with the rest in _fail
                self.f = None
            self._fail(e)

    def _feed(self, data):
        try:
            self._tar_in(self.tar, data)
        except ReasonError as e:
            self._fail(_as_install_error(e))
        except Exception as e:
            self._fail(e)

    def _tar_in(self, tar, data):
        """Give the parser archive bytes, never more than the signed manifest accounts for: a
        gzip bomb (a small body inflating to megabytes past the tar's end) stops here."""
        self.fed += len(data)
        if self.bound is not None and self.fed > self.bound:
            raise ReasonError(
                "too_large",
                "the archive runs past the %d bytes its manifest declares" % self.bound,
            )
        tar.feed(data)

    def _fail(self, e):
        self.failed = e
        self._clean_slot()
        raise e

    def finish(self, md5_hex, sha256=None):
        """`sha256` (the body's, raw or hex) is not needed here: every byte that matters is
        covered by the signature (manifest) or the manifest's per-file SHA-256, checked as the
        files are written."""
        if self.failed is not None:
            raise self.failed
        if self.got != self.size:
            self._fail(ReasonError("bad_archive", "%d of %d bytes" % (self.got, self.size)))
        self.md5 = md5_hex
        try:
            if self.head is not None:
                self._route(b"")  # a body shorter than the gzip magic
            if self.f is not None:
                self.f.close()
                self.f = None
                self._unpack_staged()
            else:
                self.tar.close()
        except ReasonError as e:
            self._fail(_as_install_error(e))
        except Exception as e:
            self._fail(e)
        self.ready = True

    def abort(self):
        if self.f is not None:
            self.f.close()
            self.f = None
        fsutil.remove(self.slots.staging)
        if self.slot is not None and not self.ready:
            self._clean_slot()

    def activate(self):
        if not self.ready:
            raise ReasonError("bad_archive", "activate() before a successful finish()")
        s = self.slots
        m = self.manifest
        art = trial.artifact(
            "bundle", m["name"], m["version"], m["counter"], self.md5, self.size, self.ident
        )
        trial.begin(s, self.board, self.slot, art, {"kind": "bundle"})
        fsutil.remove(s.staging)
        log.info("ota", "switched to %s %s in %s" % (m["name"], m["version"], self.slot))

    # -- helpers --------------------------------------------------------------------------------
    def _clean_slot(self):
        if self.out is not None:
            self.out.close()
            self.out = None
        if self.slot is not None:
            fsutil.rmtree(self.slots.path(self.slot))
        fsutil.remove(self.slots.staging)

    def _unpack_staged(self):
        from .tarstream import TarFeed, gunzip, read_full

        buf = bytearray(BUF)
        view = memoryview(buf)
        tar = TarFeed(self)
        with open(self.slots.staging, "rb") as f:
            z = gunzip(f, self.board.deflate_wbits)  # refuses a window the board cannot afford
            try:
                while True:
                    n = read_full(z, view)
                    if n:
                        self._tar_in(tar, view[:n])
                    if n < len(buf):
                        break
            finally:
                log.info("ota", "gzip body: %d bytes inflated" % self.fed)
        tar.close()

    # -- the TarFeed sink: members in archive order ----------------------------------------------
    def member(self, m):
        if self.manifest is None:
            if self.raw is None:
                if m.name != "manifest.json":
                    raise ReasonError("bad_manifest", "the first member must be manifest.json")
                self.raw = self._hold(m, MAX_MANIFEST)
                return
            if self.sig is None and m.name == "manifest.sig":
                self.sig = self._hold(m, MAX_SIG)
                return
            self._verify()  # before any app file is written
        self._file(m)

    def data(self, m, view):
        if self.out is not None:
            self.h.update(view)
            self.out.write(view)
        elif self.held is not None:
            n = len(view)
            self.held[self.hfill : self.hfill + n] = view
            self.hfill += n

    def done(self, m):
        self.held = None
        if self.out is None:
            return
        self.out.close()
        self.out = None
        if self.h.digest() != self.want:
            raise ReasonError("hash_mismatch", m.name)
        self.board.feed_watchdog()

    def end(self):
        if self.manifest is None:
            if self.raw is None:
                raise ReasonError("bad_manifest", "the first member must be manifest.json")
            self._verify()
        for path in self.manifest["files"]:
            if path not in self.seen:
                raise ReasonError("missing_file", path)

    def _hold(self, m, limit):
        if m.kind != "file" or m.size > limit:
            raise ReasonError("bad_manifest", "%s missing or too large" % m.name)
        self.held = bytearray(m.size)
        self.hfill = 0
        return self.held

    def _verify(self):
        self._check_signature(self.raw, self.sig)
        man = parse_manifest(self.raw)
        self.bound = archive_bound(man, len(self.raw), len(self.sig) if self.sig else 0)
        digest = binascii.hexlify(hashlib.sha256(self.raw).digest()).decode()
        self.ident = trial.identity(man["name"], man["version"], man["counter"], digest)
        if self.ident in trial.refused(self.state):
            # the same signed release, whatever its transfer bytes (re-padded, re-compressed)
            raise ReasonError(
                "failed_trial",
                "%s %s failed its trial here before" % (man["name"], man["version"]),
            )
        self.raw = self.sig = None
        self._check_policy(man)
        self.manifest = man
        self.seen = {}
        fsutil.makedirs(self.slots.path(self.slot))

    def _check_signature(self, raw, sig):
        from . import trust

        keys = self.keys if self.keys is not None else trust.load_keys(self.slots.keys_dir)
        if sig is not None and keys:
            try:
                self.signed_by = trust.check(raw, sig, keys)
            except ReasonError as e:
                raise ReasonError("bad_signature", e.detail)
            return
        what = "unsigned bundle" if sig is None else "bundle signed by no key on this device"
        unsigned_policy(self.board, self.settings, self.verified, what)
        self.signed_by = None
        log.warn("ota", "installing an %s (verified TLS, allow_unsigned)" % what)

    def _check_policy(self, man):
        floor = trial.counter_floor(self.state, self.slots, "app")
        if man["counter"] < floor:
            raise ReasonError(
                "old_counter", "security counter %d below %d" % (man["counter"], floor)
            )
        if (self.name and self.name != man["name"]) or (
            self.version and self.version != man["version"]
        ):
            log.warn(
                "ota",
                "server said %s %s, signed manifest says %s %s; using the manifest"
                % (self.name, self.version, man["name"], man["version"]),
            )
        free = self.slots.free()
        if man["space"] > free:
            raise ReasonError("no_space", "needs %d bytes, %d free" % (man["space"], free))

    def _file(self, m):
        """A member after the signature check: a folder or file the manifest names, opened in
        the slot (the data follows)."""
        files = self.manifest["files"]
        base = self.slots.path(self.slot)
        if m.kind == "dir":
            prefix = m.name + "/"
            for p in files:
                if p.startswith(prefix):
                    fsutil.makedirs(base + "/" + m.name)
                    return
            raise ReasonError("extra_file", "folder %s is not in the manifest" % m.name)
        want = files.get(m.name)
        if want is None or m.name in self.seen:
            raise ReasonError("extra_file", "%s is not in the manifest" % m.name)
        if m.size != want[0]:
            raise ReasonError(
                "size_mismatch", "%s: %d bytes, manifest %d" % (m.name, m.size, want[0])
            )
        self.seen[m.name] = True
        path = base + "/" + m.name
        folder = path.rsplit("/", 1)[0]
        if folder != base:
            fsutil.makedirs(folder)
        self.want = binascii.unhexlify(want[1])
        self.h = hashlib.sha256()
        self.out = open(path, "wb")


def _text(value, most):
    return isinstance(value, str) and 1 <= len(value) <= most


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _as_install_error(e):
    # The archive reader's refusals are one install reason; ours (hash_mismatch, ...) stay, and
    # so does too_large: more than the archive may hold (a bomb) is not a damaged archive.
    from . import tarstream

    if e.reason in tarstream.REASONS and e.reason != "too_large":
        return ReasonError("bad_archive", str(e))
    return e


def _blocks(n):
    return (n + 511) // 512 * 512


def archive_bound(man, manifest_len, sig_len):
    """The most bytes a tar holding what the parsed manifest `man` declares can take: each
    member's header and padded data, one header per folder, the end marker and a record of
    padding (tarstream.MAX_TRAILING). Inflation past it is refused."""
    from .tarstream import MAX_TRAILING

    total = 512 + _blocks(manifest_len) + (512 + _blocks(sig_len) if sig_len else 0)
    folders = {}
    for path, (size, _) in man["files"].items():
        total += 512 + _blocks(size)
        parts = path.split("/")
        for i in range(1, len(parts)):
            folders["/".join(parts[:i])] = True
    return total + 512 * len(folders) + 1024 + MAX_TRAILING


def parse_manifest(raw):
    """Check a manifest.json; returns it with files as {path: (size, sha256 hex)}."""
    from . import trust
    from .tarstream import check_name

    try:
        man = json.loads(bytes(raw))
    except (ValueError, UnicodeError) as e:
        raise ReasonError("bad_manifest", "not JSON: %s" % e)
    if isinstance(man, dict):
        trust.check_kind(man, "manifest")  # before any other field, signed or not
    if not isinstance(man, dict) or man.get("format") != 1:
        raise ReasonError("bad_manifest", "unknown manifest format")
    if not _text(man.get("name"), 32) or not _text(man.get("version"), 11):
        raise ReasonError("bad_manifest", "name (1-32) and version (1-11 characters)")
    if not _count(man.get("counter")) or not _count(man.get("space")):
        raise ReasonError("bad_manifest", "counter and space must be whole numbers")
    entries = man.get("files")
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_FILES:
        raise ReasonError("bad_manifest", "files must list 1 to %d files" % MAX_FILES)
    files = {}
    for e in entries:
        if not isinstance(e, dict):
            raise ReasonError("bad_manifest", "file entry")
        path, size, sha = e.get("path"), e.get("size"), e.get("sha256")
        try:
            check_name(path if isinstance(path, str) else "")
        except ReasonError as err:
            raise ReasonError("bad_manifest", str(err))
        if path in files or path in ("manifest.json", "manifest.sig"):
            raise ReasonError("bad_manifest", "duplicate or reserved path %s" % path)
        if not _count(size) or not isinstance(sha, str) or len(sha) != 64:
            raise ReasonError("bad_manifest", "size/sha256 of %s" % path)
        for c in sha:
            if c not in "0123456789abcdef":
                raise ReasonError("bad_manifest", "sha256 of %s" % path)
        files[path] = (size, sha)
    man["files"] = files
    return man
