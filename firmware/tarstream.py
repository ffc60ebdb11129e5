# A streaming reader of ustar archives, optionally gzip-compressed, for untrusted input, in two
# forms: TarReader pulls from a stream and yields members whose data is read in chunks into the
# caller's buffer; TarFeed is pushed the bytes as they arrive and hands members and data views to
# a sink (an install parses the archive while it downloads). Neither holds a member in RAM. Both
# are strict and share the header rules: checksums, octal fields, magic, names (relative, no
# '..', a small character set) and types (regular files and folders only); anything else raises
# ReasonError. Runs on MicroPython (deflate.DeflateIO) and CPython (zlib), where it is fuzzed.
import io

from .reason import ReasonError

# What a malformed archive is refused with (ReasonError.reason).
REASONS = (
    "truncated",
    "checksum",
    "bad_header",
    "bad_name",
    "bad_type",
    "too_large",
    "bad_gzip",
    "trailing",
)  # and "window_too_large": a sound gzip that needs more RAM than the board has (gunzip)

BLOCK = 512
MAX_NAME = 255
MAX_MEMBER = 16 * 1024 * 1024
MAX_MEMBERS = 1000
# Zero bytes accepted after the end marker: tar pads an archive to its 10 KiB record, so at most
# 10240 - 1024; more is not padding but a bomb's filler (megabytes of zeros compress to nothing).
MAX_TRAILING = 10240
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+/"

WBITS_MAX = 15  # deflate's largest window, 2**15 = 32 KiB: what a gzip that declares none may use
WINDOW_SUBFIELD = b"WB"  # gzip extra subfield where `ias bundle build --gzip` declares its window
_MAX_XLEN = 64  # extra-field bytes read to find it; a longer field is not ours
GZIP_HEAD_MAX = 12 + _MAX_XLEN  # the most header_len() asks for

FILE = "file"
DIR = "dir"


def read_full(stream, view):
    """Fill `view` from the stream; returns how many bytes came before the end."""
    got = 0
    n_want = len(view)
    while got < n_want:
        try:
            n = stream.readinto(view[got:])
        except OSError as e:  # DeflateIO reports corrupt data as OSError
            raise ReasonError("bad_gzip", str(e))
        except EOFError:  # ... and a cut-short stream as EOFError
            raise ReasonError("bad_gzip", "compressed stream ends early")
        if not n:
            break
        got += n
    return got


class _Replay(io.IOBase):
    """The bytes already read (to sniff gzip), then the rest of the stream."""

    def __init__(self, head, stream):
        self.head = head
        self.pos = 0
        self.stream = stream

    def readinto(self, buf):
        left = len(self.head) - self.pos
        if left > 0:
            n = min(left, len(buf))
            buf[:n] = self.head[self.pos : self.pos + n]
            self.pos += n
            return n
        return self.stream.readinto(buf)


class _Inflate(io.IOBase):
    """CPython stand-in for MicroPython's deflate.DeflateIO(stream, GZIP, wbits)."""

    def __init__(self, stream, wbits):
        import zlib

        self.stream = stream
        self.z = zlib.decompressobj(16 + wbits)  # gzip only, that window
        self.tail = b""
        self.inbuf = bytearray(1024)

    def readinto(self, buf):
        import zlib

        while True:
            if self.z.eof:
                return 0
            data = self.tail
            if not data:
                n = self.stream.readinto(self.inbuf)
                if not n:
                    raise ReasonError("bad_gzip", "compressed stream ends early")
                data = bytes(self.inbuf[:n])
            try:
                out = self.z.decompress(data, len(buf))
            except zlib.error as e:
                raise ReasonError("bad_gzip", str(e))
            self.tail = self.z.unconsumed_tail
            if out:
                buf[: len(out)] = out
                return len(out)


def window_bits(head):
    """The deflate window (bits) the gzip header `head` declares in its extra field (subfield
    WB, one byte 9..15), else WBITS_MAX: the gzip format does not record the window, and a
    default compressor uses 32 KiB."""
    if len(head) < 12 or head[0] != 0x1F or head[1] != 0x8B or not head[3] & 0x04:
        return WBITS_MAX
    end = 12 + (head[10] | head[11] << 8)
    i = 12
    while i + 4 <= end and end <= len(head):
        n = head[i + 2] | head[i + 3] << 8
        if head[i : i + 2] == WINDOW_SUBFIELD and n == 1 and i + 5 <= end:
            w = head[i + 4]
            return w if 9 <= w <= WBITS_MAX else WBITS_MAX
        i += 4 + n
    return WBITS_MAX


def header_len(head):
    """How many first bytes of a gzip stream window_bits() reads: 12, plus the extra field when
    one of at most _MAX_XLEN bytes follows (a longer one is not ours: the window is undeclared)."""
    if len(head) >= 12 and head[3] & 0x04 and head[10] | head[11] << 8 <= _MAX_XLEN:
        return 12 + (head[10] | head[11] << 8)
    return 12


def check_window(wbits, max_wbits):
    """Refuse a window of 2**wbits bytes on a board that affords 2**max_wbits."""
    if wbits > max_wbits:
        raise ReasonError(
            "window_too_large",
            "the gzip stream needs a %d-byte window, this board affords %d (build the bundle "
            "with `ias bundle build --gzip`)" % (1 << wbits, 1 << max_wbits),
        )


def gunzip(stream, max_wbits=WBITS_MAX):
    """A stream of the decompressed bytes of a gzip stream, whose window must fit in 2**max_wbits
    bytes (the board's deflate_wbits). The window is read from the header first (window_bits):
    a stream asking for more is refused with ReasonError("window_too_large") before anything
    is allocated for it; the decompressor then gets exactly the declared window, so a stream
    that reaches further back than it declared fails as bad_gzip, never allocates 32 KiB."""
    head = bytearray(GZIP_HEAD_MAX)
    view = memoryview(head)
    n = read_full(stream, view[:12])
    if n == 12:
        n += read_full(stream, view[12 : header_len(head)])
    wbits = window_bits(head[:n])
    check_window(wbits, max_wbits)
    stream = _Replay(bytes(head[:n]), stream)
    try:
        import deflate
    except ImportError:
        return _Inflate(stream, wbits)
    return deflate.DeflateIO(stream, deflate.GZIP, wbits)


def _octal(hdr, start, length, what):
    """A NUL/space-terminated octal field; base-256 and anything odd are refused."""
    i = start
    end = start + length
    while i < end and hdr[i] == 0x20:
        i += 1
    value = 0
    digits = 0
    while i < end and 0x30 <= hdr[i] <= 0x37:
        value = value * 8 + hdr[i] - 0x30
        digits += 1
        i += 1
    if not digits:
        raise ReasonError("bad_header", "%s field has no digits" % what)
    while i < end:
        if hdr[i] not in (0, 0x20):
            raise ReasonError("bad_header", "%s field is not octal" % what)
        i += 1
    return value


def _cstr(hdr, start, length):
    end = start + length
    i = start
    while i < end and hdr[i]:
        i += 1
    return bytes(hdr[start:i])


def check_name(name):
    """A relative path of plain components: no absolute path, '.', '..', '//' or odd bytes."""
    if not name or len(name) > MAX_NAME:
        raise ReasonError("bad_name", "empty or too long")
    for c in name:
        if c not in _NAME_CHARS:
            raise ReasonError("bad_name", "character %r in %r" % (c, name))
    if name[0] == "/":
        raise ReasonError("bad_name", "absolute path %r" % name)
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise ReasonError("bad_name", "component %r in %r" % (part, name))
    return name


class Member:
    def __init__(self, reader, name, kind, size, mode):
        self._reader = reader
        self.name = name
        self.kind = kind
        self.size = size
        self.mode = mode
        self.left = size  # data bytes not yet read

    def readinto(self, buf):
        """Up to len(buf) bytes of this member's data into buf; 0 at its end."""
        n = min(len(buf), self.left)
        if n == 0:
            return 0
        view = memoryview(buf)[:n]
        if read_full(self._reader.stream, view) != n:
            raise ReasonError("truncated", "data of %s" % self.name)
        self.left -= n
        return n


class TarReader:
    """for m in TarReader(stream): m.name, m.kind (FILE or DIR), m.size, m.readinto(buf)."""

    def __init__(
        self, stream, gz=None, max_member=MAX_MEMBER, max_members=MAX_MEMBERS, max_wbits=WBITS_MAX
    ):
        self.max_member = max_member
        self.max_members = max_members
        self.count = 0
        self._hdr = bytearray(BLOCK)
        self._current = None
        self._done = False
        if gz is None:  # sniff the gzip magic; the bytes read are replayed
            head = bytearray(2)
            n = read_full(stream, memoryview(head))
            gz = n == 2 and head[0] == 0x1F and head[1] == 0x8B
            stream = _Replay(bytes(head[:n]), stream)
        self.gzip = gz
        self.stream = gunzip(stream, max_wbits) if gz else stream

    def __iter__(self):
        while True:
            m = self.next()
            if m is None:
                return
            yield m

    def _skip_rest(self):
        m = self._current
        if m is None:
            return
        pad = (-m.size) % BLOCK
        hdr = memoryview(self._hdr)
        while m.left:
            m.readinto(hdr[: min(BLOCK, m.left)])
        if pad and read_full(self.stream, hdr[:pad]) != pad:
            raise ReasonError("truncated", "padding after %s" % m.name)
        self._current = None

    def _zero(self):
        return _is_zero(self._hdr)

    def next(self):
        """The next member, or None after the end-of-archive marker."""
        if self._done:
            return None
        self._skip_rest()
        hdr = self._hdr
        n = read_full(self.stream, memoryview(hdr))
        if n != BLOCK:
            raise ReasonError("truncated", "header (%d bytes)" % n)
        if self._zero():
            # The end marker is two zero blocks; a lone one at the very end is tolerated.
            n = read_full(self.stream, memoryview(hdr))
            if n and (n != BLOCK or not self._zero()):
                raise ReasonError("trailing", "data after the end marker")
            self._done = True
            return None
        self.count += 1
        if self.count > self.max_members:
            raise ReasonError("too_large", "more than %d members" % self.max_members)
        m = self._parse()
        self._current = m
        return m

    def _parse(self):
        name, kind, size, mode = parse_header(self._hdr, self.max_member)
        return Member(self, name, kind, size, mode)


def _is_zero(block):
    for b in block:
        if b:
            return False
    return True


def parse_header(hdr, max_member=MAX_MEMBER):
    """(name, kind, size, mode) of a 512-byte header that is not all zeros."""
    stored = _octal(hdr, 148, 8, "checksum")
    total = 8 * 0x20  # the checksum field counts as spaces
    for i in range(148):
        total += hdr[i]
    for i in range(156, BLOCK):
        total += hdr[i]
    if stored != total:
        raise ReasonError("checksum", "header checksum %d, computed %d" % (stored, total))
    magic = bytes(hdr[257:265])
    if magic == b"ustar\x0000":
        prefix = _cstr(hdr, 345, 155)
    elif magic == b"ustar  \x00":
        prefix = b""  # GNU keeps other fields there
    else:
        raise ReasonError("bad_header", "not a ustar header")
    flag = hdr[156]
    if flag in (0x30, 0):
        kind = FILE
    elif flag == 0x35:
        kind = DIR
    else:
        raise ReasonError("bad_type", "member type %r" % chr(flag))
    size = _octal(hdr, 124, 12, "size")
    mode = _octal(hdr, 100, 8, "mode")
    raw = _cstr(hdr, 0, 100)
    if prefix:
        raw = prefix + b"/" + raw
    try:
        name = raw.decode()
    except UnicodeError:
        raise ReasonError("bad_name", "not text")
    if kind == DIR:
        if size:
            raise ReasonError("bad_header", "folder %r with data" % name)
        if name.endswith("/"):
            name = name[:-1]
    if size > max_member:
        raise ReasonError("too_large", "%s is %d bytes" % (name, size))
    check_name(name)
    return name, kind, size, mode


class TarFeed:
    """The push form: feed(chunk) with the archive's bytes as they arrive, close() at its end.
    Calls sink.member(m) for each header (m: name, kind, size, mode, left), sink.data(m, view)
    for its data (views into the chunk, valid only during the call), sink.done(m) after its last
    byte and sink.end() at the end marker. Past the end marker only zero bytes (tar's record
    padding), at most `max_trailing` of them, are accepted. Errors from the sink propagate."""

    def __init__(
        self, sink, max_member=MAX_MEMBER, max_members=MAX_MEMBERS, max_trailing=MAX_TRAILING
    ):
        self.sink = sink
        self.max_member = max_member
        self.max_members = max_members
        self.max_trailing = max_trailing
        self.trailing = max_trailing  # zero bytes still accepted after the end marker
        self.count = 0
        self._hdr = bytearray(BLOCK)
        self._fill = 0  # bytes of the next header block gathered so far
        self._m = None  # the member whose data is arriving
        self._pad = 0  # padding bytes still to skip
        self._zeros = 0  # zero blocks of the end marker seen (2 = ended)
        self._last = None  # the member before the current position

    def feed(self, chunk):
        view = memoryview(chunk)
        pos = 0
        n = len(view)
        while pos < n:
            m = self._m
            if m is not None:
                k = min(m.left, n - pos)
                m.left -= k
                self.sink.data(m, view[pos : pos + k])
                pos += k
                if not m.left:
                    self._member_done(m)
            elif self._pad:
                k = min(self._pad, n - pos)
                self._pad -= k
                pos += k
            elif self._zeros == 2:
                for i in range(pos, n):
                    if view[i]:
                        raise ReasonError("trailing", "data after the end marker")
                self.trailing -= n - pos
                if self.trailing < 0:
                    why = "more than %d zero bytes after the end marker" % self.max_trailing
                    raise ReasonError("too_large", why)
                return
            else:
                k = min(BLOCK - self._fill, n - pos)
                self._hdr[self._fill : self._fill + k] = view[pos : pos + k]
                self._fill += k
                pos += k
                if self._fill == BLOCK:
                    self._fill = 0
                    self._block()

    def close(self):
        """The input ended: raises ReasonError unless the archive was complete."""
        if self._zeros == 2:
            return
        if self._zeros == 1:
            if self._fill:
                raise ReasonError("trailing", "data after the end marker")
            self._zeros = 2  # a lone zero block at the very end is tolerated
            self.sink.end()
            return
        if self._m is not None or self._pad:
            raise ReasonError("truncated", "data of %s" % (self._m or self._last).name)
        raise ReasonError("truncated", "header (%d bytes)" % self._fill)

    def _block(self):
        if _is_zero(self._hdr):
            self._zeros += 1
            if self._zeros == 2:
                self.sink.end()
            return
        if self._zeros:
            raise ReasonError("trailing", "data after the end marker")
        self.count += 1
        if self.count > self.max_members:
            raise ReasonError("too_large", "more than %d members" % self.max_members)
        name, kind, size, mode = parse_header(self._hdr, self.max_member)
        m = Member(None, name, kind, size, mode)
        self.sink.member(m)
        if size:
            self._m = m
        else:
            self._member_done(m)

    def _member_done(self, m):
        self._m = None
        self._last = m
        self._pad = (-m.size) % BLOCK
        self.sink.done(m)
