# Installing updates: signed app bundles into the inactive slot folder with an atomic switch of
# the slot pointer, ESP32 firmware images into the next OTA partition, and the trial that every
# new version must pass (boot, then one verified call home) before it is committed; otherwise it
# is rolled back by itself and the failure is kept for the next call home to report.
#
# Pointer /app.json: {"active": "slot_a", "kind": "bundle"|"firmware"|"factory", "name",
# "version", "counter", "md5", "size"} plus, while a new version is on trial, "prev" (the same
# fields of the version to go back to) and "trial": {"kind", "boots", "since", "target", "from"}.
import hashlib
import json
import os

import fsutil
import log
from reason import InstallError

# trust and tarstream are imported where an install needs them: boot.py imports this module at
# every boot, and RAM is scarce (ESP8266).

SLOTS = ("slot_a", "slot_b")
TRIAL_BOOTS = 3  # boots a new version gets to complete one verified call home
TRIAL_MS = 600000  # ... and at most this long
MAX_MANIFEST = 8192
MAX_SIG = 512
MAX_FILES = 200
BUF = 1024  # the one copy buffer of a bundle install
FLASH_BLOCK = 4096
# State key of the last install or trial failure. Apart from callhome's own "last_error" (which
# the next failed call overwrites), so a rollback is reported even after more failed calls.
ERROR_KEY = "ota_error"
_ART = ("kind", "name", "version", "counter", "md5", "size")
_APP_DESC_MAGIC = b"\x32\x54\xcd\xab"  # esp_app_desc_t magic 0xABCD5432, little-endian


# -- the slot pointer ---------------------------------------------------------------------------
class Slots:
    """The app slots and their pointer under `root` ("" on the device, e.g. "/pc" in tests)."""

    def __init__(self, root=""):
        self.root = root
        self.pointer = root + "/app.json"
        self.staging = root + "/ota.part"
        self.keys_dir = root + "/keys"
        self.settings_path = root + "/settings.json"
        self._info = None

    def read(self):
        if self._info is None:
            info = None
            try:
                with open(self.pointer) as f:
                    info = json.load(f)
            except OSError:
                pass
            except ValueError as e:
                log.warn("ota", "%s unreadable (%s): using slot_a" % (self.pointer, e))
            if not isinstance(info, dict) or info.get("active") not in SLOTS:
                info = {"active": "slot_a", "kind": "factory"}
            self._info = info
        return self._info

    def write(self, info):
        fsutil.write_atomic(self.pointer, json.dumps(info))  # the one atomic switch
        self._info = info

    def path(self, slot):
        return self.root + "/" + slot

    def active(self):
        return self.read()["active"]

    def inactive(self):
        return SLOTS[1] if self.active() == SLOTS[0] else SLOTS[0]

    def active_app_dir(self):
        return self.path(self.active())

    def trial(self):
        return self.read().get("trial")

    def installed_artifact(self):
        info = self.read()
        return {
            "size": info.get("size", 0),
            "md5": info.get("md5", ""),
            "name": info.get("name", ""),
            "version": info.get("version", ""),
            "counter": info.get("counter", 0),
        }

    def free(self):
        st = os.statvfs(self.root or "/")
        return st[0] * st[3]


_default = None


def default_slots():
    global _default
    if _default is None:
        _default = Slots()
    return _default


def active_app_dir(slots=None):
    """The folder the user's app (app.py) is imported from."""
    return (slots or default_slots()).active_app_dir()


def installed_artifact(slots=None):
    """{"size", "md5", "name", "version", "counter"} of the installed bundle or firmware."""
    return (slots or default_slots()).installed_artifact()


def trial_pending(slots=None):
    """The trial record while a new version waits for its verified call home, else None."""
    return (slots or default_slots()).trial()


def last_error(state):
    """The last install or trial failure (text) for x-IAS-LAST-ERROR, or None."""
    return state.get(ERROR_KEY)


def clear_error(state):
    state.drop(ERROR_KEY)


def _record(state, text):
    log.warn("ota", text)
    state.set(ERROR_KEY, text[:120])


def _label(part):
    return part.info()[4] if part is not None else None


def _clock_ok(board):
    from board import clock_is_sane

    return board.clock_synced or clock_is_sane(board.time())


# -- trial, commit, rollback --------------------------------------------------------------------
def boot_check(board, state, slots=None):
    """Run early in boot.py, before the app is imported. Counts trial boots and rolls back a
    version that crashed, was reset by the watchdog, used up its boots or its 10 minutes.
    Returns None (no trial), "trial" (the new version runs) or "rolled_back"."""
    s = slots or default_slots()
    info = s.read()
    t = info.get("trial")
    if not t:
        return None
    t = dict(t)
    boots = t.get("boots", 0)
    if t.get("kind") == "firmware":
        running = _label(board.running_partition())
        if running != t.get("target"):
            if boots:
                why = "firmware %s failed its trial boot; bootloader went back to %s"
                _restore(s, state, why % (info.get("version"), running))
            else:
                _restore(s, state, "firmware switch to %s did not happen" % t.get("target"))
            return "rolled_back"
        if boots:
            # ESP-IDF grants one trial boot: running it again means it was marked valid and
            # only the pointer update was cut short. Finish that commit.
            _commit_pointer(s, state, info, None)
            return None
    else:
        cause = board.reset_cause()
        if boots and cause in ("crash", "watchdog"):
            rollback(
                board, state, "%s during trial of %s" % (cause, info.get("version")), s, False
            )
            return "rolled_back"
        if boots >= TRIAL_BOOTS:
            why = "%s not confirmed within %d boots" % (info.get("version"), TRIAL_BOOTS)
            rollback(board, state, why, s, False)
            return "rolled_back"
        if _trial_expired(board, t, 0):
            rollback(board, state, "%s not confirmed in time" % info.get("version"), s, False)
            return "rolled_back"
    t["boots"] = boots + 1
    new = dict(info)
    new["trial"] = t
    s.write(new)
    log.info("ota", "trial boot %d of %s %s" % (t["boots"], info.get("name"), info.get("version")))
    return "trial"


def _trial_expired(board, t, uptime_ms):
    if uptime_ms > TRIAL_MS:
        return True
    since = t.get("since", 0)
    if since and _clock_ok(board):
        return board.time() - since > TRIAL_MS // 1000
    return False


def trial_tick(board, state, slots=None):
    """Call from the main loop (cheap). Past the trial deadline without a commit, rolls back
    and resets the board."""
    s = slots or default_slots()
    t = s.trial()
    if t and _trial_expired(board, t, board.uptime_ms()):
        rollback(board, state, "%s not confirmed within 10 minutes" % s.read().get("version"), s)
        return True
    return False


def commit(board, state, settings=None, slots=None):
    """After a verified call home succeeded on the version on trial: keep it. The firmware is
    marked valid, the pointer loses its trial, the security counter floor rises and settings
    app_name/app_version take the new values. Returns the committed artifact or None."""
    s = slots or default_slots()
    info = s.read()
    t = info.get("trial")
    if not t:
        return None
    if t.get("kind") == "firmware":
        part = board.running_partition()
        if _label(part) != t.get("target"):
            return None  # boot_check records this case
        try:
            part.mark_app_valid_cancel_rollback()
        except OSError as e:
            log.warn("ota", "mark_app_valid_cancel_rollback: %r" % e)
    return _commit_pointer(s, state, info, settings)


def _commit_pointer(s, state, info, settings):
    new = dict(info)
    new.pop("trial", None)
    new.pop("prev", None)
    s.write(new)
    import trust

    kind = "firmware" if new.get("kind") == "firmware" else "app"
    trust.raise_counter(state, kind, new.get("counter", 0))
    _set_app(s, settings, new.get("name", ""), new.get("version", ""))
    log.info("ota", "committed %s %s" % (new.get("name"), new.get("version")))
    return s.installed_artifact()


def _set_app(s, settings, name, version):
    import settings as settings_mod

    data = settings if settings is not None else settings_mod.load(s.settings_path)
    data["app_name"] = name
    data["app_version"] = version
    try:
        settings_mod.save(data, s.settings_path)
    except ValueError as e:
        log.warn("ota", "settings not updated: %s" % e)


def rollback(board, state, reason, slots=None, reset=True):
    """Go back to the previous version: the pointer returns to it (bundles) and, for firmware,
    the reset lets the bootloader abort the unconfirmed image. The reason is kept for the next
    call home. Resets the board when `reset` (always for firmware on trial). Returns False
    when nothing is on trial."""
    s = slots or default_slots()
    t = s.trial()
    if not t:
        return False
    _restore(s, state, "rollback: " + reason)
    if reset or t.get("kind") == "firmware":
        board.reset()
    return True


def _restore(s, state, text):
    info = s.read()
    prev = info.get("prev") or {"active": info.get("active"), "kind": "factory"}
    new = {"active": prev.get("active", info.get("active"))}
    for k in _ART:
        if k in prev:
            new[k] = prev[k]
    if info.get("trial", {}).get("kind") == "firmware":
        new["active"] = info.get("active")  # the app slot did not change
    s.write(new)
    _record(state, text)
    _refuse(state, info.get("md5"))


REFUSED_KEY = "refused_md5"  # artifacts that failed their trial here: not taken again
MAX_REFUSED = 4


def _refuse(state, md5):
    if not md5:
        return
    seen = [m for m in state.get(REFUSED_KEY, []) if m != md5]
    state.set(REFUSED_KEY, (seen + [md5])[-MAX_REFUSED:])


def _artifact(kind, name, version, counter, md5, size):
    return {
        "kind": kind,
        "name": name,
        "version": version,
        "counter": counter,
        "md5": md5,
        "size": size,
    }


def _trial_pointer(s, board, active, art, trial):
    info = s.read()
    prev = {"active": info["active"]}
    for k in _ART:
        if k in info:
            prev[k] = info[k]
    trial["boots"] = 0
    trial["since"] = board.time() if _clock_ok(board) else 0
    new = {"active": active, "prev": prev, "trial": trial}
    new.update(art)
    return new


# -- choosing an installer ----------------------------------------------------------------------
def _get(ctx, name, default=None):
    if isinstance(ctx, dict):
        return ctx.get(name, default)
    return getattr(ctx, name, default)


def installer_for(first_bytes, ctx):
    """The installer for a body starting with `first_bytes`. ctx (object or dict): board,
    settings, state, verified (the TLS connection was verified), optional slots and keys."""
    b = bytes(first_bytes[:263])
    if b[:1] == b"\xe9":
        return FirmwareInstaller(ctx)
    if b[:2] == b"\x1f\x8b" or b[257:262] == b"ustar" or len(b) < 263:
        return BundleInstaller(ctx)
    raise InstallError("unknown_format", "neither an app bundle nor an ESP32 app image")


def _get_settings(settings):
    return settings if isinstance(settings, dict) and "app_name" in settings else None


def _digest(sha256):
    """The raw SHA-256 from raw bytes or 64 hex digits (callers hand either)."""
    if sha256 is None:
        return None
    if isinstance(sha256, str):
        import binascii

        return binascii.unhexlify(sha256)
    return bytes(sha256)


def _unsigned_policy(board, settings, verified, what):
    """An unsigned payload needs TLS that verifies, a verified connection and allow_unsigned."""
    if not board.tls_verifies:
        raise InstallError("unsigned", "%s: this board cannot verify TLS, only signed" % what)
    if not verified:
        raise InstallError("unsigned", "%s over a connection that was not verified" % what)
    if not settings.get("allow_unsigned"):
        raise InstallError("unsigned", "%s refused (settings allow_unsigned is off)" % what)


class _Base:
    def __init__(self, ctx):
        self.board = _get(ctx, "board")
        self.settings = _get(ctx, "settings") or {}
        self.state = _get(ctx, "state")
        self.verified = bool(_get(ctx, "verified", False))
        self.slots = _get(ctx, "slots") or default_slots()
        self.keys = _get(ctx, "keys")
        self.size = 0
        self.got = 0
        self.ready = False

    def _start(self, size, name, version):
        if self.slots.trial():
            if not (self.verified or not self.board.tls_verifies) or self.state is None:
                raise InstallError("trial_pending", "the version on trial is not committed yet")
            # The server answered the version on trial over verified TLS (or the only kind this
            # board has): that is the call home its trial waits for. Keep it, then go on.
            commit(self.board, self.state, _get_settings(self.settings), self.slots)
        self.size = size
        self.name = name
        self.version = version


# -- app bundles --------------------------------------------------------------------------------
class BundleInstaller(_Base):
    """A plain tar body is parsed while it arrives (tarstream.TarFeed): manifest.json and
    manifest.sig are held in RAM (bounded), the signature and the manifest are checked, and only
    then is each file written straight into the inactive slot, its size and SHA-256 checked on
    the way, so the body is written to flash once. A gzip body is staged in /ota.part and fed
    through the same checks from the decompressor in finish() (deflate pulls from a stream)."""

    kind = "bundle"

    def __init__(self, ctx):
        _Base.__init__(self, ctx)
        self.f = None  # the staging file (gzip bodies)
        self.tar = None  # the TarFeed of a plain body
        self.head = b""  # the first bytes, until gzip or not is known
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

    def begin(self, size, name, version):
        self._start(size, name, version)
        s = self.slots
        fsutil.remove(s.staging)
        self.slot = s.inactive()
        fsutil.rmtree(s.path(self.slot))  # the version before the active one: not needed now
        free = s.free()
        if size + 2 * FLASH_BLOCK > free:
            raise InstallError("no_space", "%d bytes to stage, %d free" % (size, free))

    def write(self, chunk):
        if self.failed is not None:
            raise self.failed
        self.got += len(chunk)
        if self.got > self.size:
            raise InstallError("too_large", "more than the announced %d bytes" % self.size)
        if self.f is not None:
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
        from tarstream import TarFeed

        head, self.head = self.head, None
        if head[:2] == b"\x1f\x8b":
            self.f = open(self.slots.staging, "wb")
            self.f.write(head)
            self.f.write(rest)
            return
        self.tar = TarFeed(self)
        self._feed(head)
        self._feed(rest)

    def _feed(self, data):
        from tarstream import TarError

        try:
            self.tar.feed(data)
        except TarError as e:
            self._fail(InstallError("bad_archive", str(e)))
        except Exception as e:
            self._fail(e)

    def _fail(self, e):
        self.failed = e
        self._clean_slot()
        raise e

    def finish(self, md5_hex, sha256=None):
        """`sha256` (the body's, raw or hex) is not needed here: every byte that matters is
        covered by the signature (manifest) or the manifest's per-file SHA-256, checked as the
        files are written."""
        from tarstream import TarError

        if self.failed is not None:
            raise self.failed
        if self.got != self.size:
            self._fail(InstallError("bad_archive", "%d of %d bytes" % (self.got, self.size)))
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
        except TarError as e:
            self._fail(InstallError("bad_archive", str(e)))
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
            raise InstallError("bad_archive", "activate() before a successful finish()")
        s = self.slots
        m = self.manifest
        art = _artifact("bundle", m["name"], m["version"], m["counter"], self.md5, self.size)
        s.write(_trial_pointer(s, self.board, self.slot, art, {"kind": "bundle"}))
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
        from tarstream import TarFeed, gunzip, read_full

        buf = bytearray(BUF)
        view = memoryview(buf)
        tar = TarFeed(self)
        with open(self.slots.staging, "rb") as f:
            z = gunzip(f)
            while True:
                n = read_full(z, view)
                if n:
                    tar.feed(view[:n])
                if n < len(buf):
                    break
        tar.close()

    # -- the TarFeed sink: members in archive order ----------------------------------------------
    def member(self, m):
        if self.manifest is None:
            if self.raw is None:
                if m.name != "manifest.json":
                    raise InstallError("bad_manifest", "the first member must be manifest.json")
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
            raise InstallError("hash_mismatch", m.name)
        self.board.feed_watchdog()

    def end(self):
        if self.manifest is None:
            if self.raw is None:
                raise InstallError("bad_manifest", "the first member must be manifest.json")
            self._verify()
        for path in self.manifest["files"]:
            if path not in self.seen:
                raise InstallError("missing_file", path)

    def _hold(self, m, limit):
        if m.kind != "file" or m.size > limit:
            raise InstallError("bad_manifest", "%s missing or too large" % m.name)
        self.held = bytearray(m.size)
        self.hfill = 0
        return self.held

    def _verify(self):
        self._check_signature(self.raw, self.sig)
        man = parse_manifest(self.raw)
        self.raw = self.sig = None
        self._check_policy(man)
        self.manifest = man
        self.seen = {}
        fsutil.makedirs(self.slots.path(self.slot))

    def _check_signature(self, raw, sig):
        import trust

        keys = self.keys if self.keys is not None else trust.load_keys(self.slots.keys_dir)
        if sig is not None and keys:
            try:
                self.signed_by = trust.check(raw, sig, keys)
            except trust.TrustError as e:
                raise InstallError("bad_signature", e.detail)
            return
        what = "unsigned bundle" if sig is None else "bundle signed by no key on this device"
        _unsigned_policy(self.board, self.settings, self.verified, what)
        self.signed_by = None
        log.warn("ota", "installing an %s (verified TLS, allow_unsigned)" % what)

    def _check_policy(self, man):
        import trust

        installed = self.slots.installed_artifact()["counter"]
        floor = trust.counter_floor(self.state, "app") if self.state is not None else 0
        if man["counter"] < max(floor, installed):
            raise InstallError(
                "old_counter",
                "security counter %d below %d" % (man["counter"], max(floor, installed)),
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
            raise InstallError("no_space", "needs %d bytes, %d free" % (man["space"], free))

    def _file(self, m):
        """A member after the signature check: a folder or file the manifest names, opened in
        the slot (the data follows)."""
        import binascii

        files = self.manifest["files"]
        base = self.slots.path(self.slot)
        if m.kind == "dir":
            prefix = m.name + "/"
            for p in files:
                if p.startswith(prefix):
                    fsutil.makedirs(base + "/" + m.name)
                    return
            raise InstallError("extra_file", "folder %s is not in the manifest" % m.name)
        want = files.get(m.name)
        if want is None or m.name in self.seen:
            raise InstallError("extra_file", "%s is not in the manifest" % m.name)
        if m.size != want[0]:
            raise InstallError(
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


def parse_manifest(raw):
    """Check a manifest.json; returns it with files as {path: (size, sha256 hex)}."""
    from tarstream import TarError, check_name

    try:
        man = json.loads(bytes(raw))
    except (ValueError, UnicodeError) as e:
        raise InstallError("bad_manifest", "not JSON: %s" % e)
    if not isinstance(man, dict) or man.get("format") != 1:
        raise InstallError("bad_manifest", "unknown manifest format")
    if not _text(man.get("name"), 32) or not _text(man.get("version"), 11):
        raise InstallError("bad_manifest", "name (1-32) and version (1-11 characters)")
    if not _count(man.get("counter")) or not _count(man.get("space")):
        raise InstallError("bad_manifest", "counter and space must be whole numbers")
    entries = man.get("files")
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_FILES:
        raise InstallError("bad_manifest", "files must list 1 to %d files" % MAX_FILES)
    files = {}
    for e in entries:
        if not isinstance(e, dict):
            raise InstallError("bad_manifest", "file entry")
        path, size, sha = e.get("path"), e.get("size"), e.get("sha256")
        try:
            check_name(path if isinstance(path, str) else "")
        except TarError as err:
            raise InstallError("bad_manifest", str(err))
        if path in files or path in ("manifest.json", "manifest.sig"):
            raise InstallError("bad_manifest", "duplicate or reserved path %s" % path)
        if not _count(size) or not isinstance(sha, str) or len(sha) != 64:
            raise InstallError("bad_manifest", "size/sha256 of %s" % path)
        for c in sha:
            if c not in "0123456789abcdef":
                raise InstallError("bad_manifest", "sha256 of %s" % path)
        files[path] = (size, sha)
    man["files"] = files
    return man


# -- ESP32 firmware images ----------------------------------------------------------------------
class _ImageScan:
    """Follows the ESP-IDF app image layout while it streams past: header, app descriptor,
    segment headers, the end of the image and its appended SHA-256. Refuses early what is not a
    single app image (a combined firmware.bin holds a bootloader image, padding, a partition
    table and then the app)."""

    def __init__(self, size):
        self.size = size
        self.head = bytearray(0x24)  # image header, first segment header, descriptor magic
        self.seg = bytearray(8)
        self.next_hdr = None  # absolute offset of the next segment header
        self.segs_left = 0
        self.end = None
        self.hashed = False
        self.h = hashlib.sha256()
        self.tail = bytearray(32)

    @staticmethod
    def _copy(dst, dst_off, view, base):
        """Copy the part of view (at absolute offset base) that falls in dst[dst_off:]."""
        lo = max(dst_off, base)
        hi = min(dst_off + len(dst), base + len(view))
        if lo < hi:
            dst[lo - dst_off : hi - dst_off] = view[lo - base : hi - base]
        return hi >= dst_off + len(dst)

    def feed(self, view, base):
        stop = base + len(view)
        if self.next_hdr is None:
            if self._copy(self.head, 0, view, base):
                self._parse_head()
        while self.next_hdr is not None and self.segs_left and self.next_hdr < stop:
            if not self._copy(self.seg, self.next_hdr, view, base):
                break
            length = int.from_bytes(self.seg[4:8], "little")
            self.next_hdr += 8 + length
            self.segs_left -= 1
            if self.next_hdr > self.size:
                raise InstallError("not_app_image", "segment runs past the end of the image")
            if not self.segs_left:
                self._set_end(self.next_hdr)
        for at in (0x7000, 0x8000):
            if base <= at < stop - 1 and view[at - base] == 0xAA and view[at - base + 1] == 0x50:
                if self.end is None or self.end <= at:
                    raise InstallError("combined_image", _COMBINED)
        hash_end = stop if self.end is None or not self.hashed else min(stop, self.end - 32)
        if hash_end > base:
            self.h.update(view[: hash_end - base])
        if self.end is not None and self.hashed:
            self._copy(self.tail, self.end - 32, view, base)

    def _parse_head(self):
        h = self.head
        if h[0] != 0xE9 or not 1 <= h[1] <= 16:
            raise InstallError("not_app_image", "no ESP image header")
        if h[0x20:0x24] != _APP_DESC_MAGIC:
            raise InstallError("not_app_image", "no app descriptor at 0x20. " + _COMBINED)
        self.hashed = h[23] == 1
        self.segs_left = h[1]
        self.next_hdr = 24

    def _set_end(self, p):
        end = p + (15 - p % 16) % 16 + 1  # the checksum byte ends a 16-byte line
        if self.hashed:
            end += 32
        self.end = end
        if end < self.size:
            raise InstallError(
                "combined_image",
                "the app image ends at %d of %d bytes. %s" % (end, self.size, _COMBINED),
            )
        if end > self.size:
            raise InstallError("not_app_image", "image of %d bytes, %d sent" % (end, self.size))

    def done(self):
        if self.end is None:
            raise InstallError("not_app_image", "truncated image")
        if self.hashed and self.h.digest() != bytes(self.tail):
            raise InstallError("not_app_image", "appended SHA-256 does not match the image")


_COMBINED = (
    "A combined firmware.bin (bootloader + partition table) is refused: send micropython.bin"
)


class FirmwareInstaller(_Base):
    """Writes an ESP32 app image block by block into the next OTA partition, reads it back and
    re-hashes it; activate() records the trial and calls set_boot()."""

    kind = "firmware"

    def begin(self, size, name, version):
        b = self.board
        if not b.has_firmware_ota:
            raise InstallError("no_firmware_ota", "this board takes app bundles only")
        _unsigned_policy(b, self.settings, self.verified, "a firmware image (unsigned)")
        self._start(size, name, version)
        part = b.running_partition()
        if part is None:
            raise InstallError("no_firmware_ota", "no OTA partition table")
        self.running = part
        self.target = part.get_next_update()
        room = self.target.ioctl(4, 0) * self.target.ioctl(5, 0)
        if size > room:
            raise InstallError("too_large", "%d bytes for a %d-byte partition" % (size, room))
        self.buf = bytearray(FLASH_BLOCK)
        self.fill = 0
        self.block = 0
        self.sha = hashlib.sha256()
        self.scan = _ImageScan(size)

    def write(self, chunk):
        if self.got + len(chunk) > self.size:
            raise InstallError("too_large", "more than the announced %d bytes" % self.size)
        view = memoryview(chunk)
        pos = 0
        while pos < len(view):
            n = min(len(view) - pos, FLASH_BLOCK - self.fill)
            self.buf[self.fill : self.fill + n] = view[pos : pos + n]
            self.fill += n
            pos += n
            if self.fill == FLASH_BLOCK:
                self._flush()
        self.got += len(chunk)

    def _flush(self):
        view = memoryview(self.buf)
        self.scan.feed(view[: self.fill], self.block * FLASH_BLOCK)
        self.sha.update(view[: self.fill])
        for i in range(self.fill, FLASH_BLOCK):  # erased flash reads 0xFF
            self.buf[i] = 0xFF
        self.target.writeblocks(self.block, self.buf)  # erases the block, then programs it
        self.block += 1
        self.fill = 0
        self.board.feed_watchdog()

    def finish(self, md5_hex, sha256=None):
        if self.fill:
            self._flush()
        if self.got != self.size:
            raise InstallError("not_app_image", "%d of %d bytes" % (self.got, self.size))
        self.scan.done()
        digest = self.sha.digest()
        if sha256 is not None and _digest(sha256) != digest:
            raise InstallError("hash_mismatch", "image SHA-256")
        h = hashlib.sha256()  # read back what the flash holds now
        left = self.size
        for i in range(self.block):
            self.target.readblocks(i, self.buf)
            n = min(left, FLASH_BLOCK)
            h.update(memoryview(self.buf)[:n])
            left -= n
        if h.digest() != digest:
            raise InstallError("verify_failed", "the partition reads back differently")
        self.md5 = md5_hex
        self.ready = True

    def abort(self):
        self.ready = False  # nothing to undo: the partition is not bootable without set_boot()

    def activate(self):
        if not self.ready:
            raise InstallError("not_app_image", "activate() before a successful finish()")
        s = self.slots
        old = s.read()
        art = _artifact("firmware", self.name, self.version, 0, self.md5, self.size)
        trial = {"kind": "firmware", "target": _label(self.target), "from": _label(self.running)}
        s.write(_trial_pointer(s, self.board, old["active"], art, trial))
        try:
            self.target.set_boot()
        except OSError as e:
            s.write(old)
            raise InstallError("set_boot_failed", repr(e))
        log.info("ota", "firmware %s set to boot from %s" % (self.version, trial["target"]))
