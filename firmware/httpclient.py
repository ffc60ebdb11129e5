# A small, bounded HTTP/1.1 client: write one request, parse the response head with hard limits,
# stream the body through one preallocated buffer with per-read timeouts and an overall deadline.
# Runs on MicroPython and CPython (the head parser is fuzzed with hypothesis there).
try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython
    import time as _time

    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_add(a, b):
        return a + b

    def ticks_diff(a, b):
        return a - b


MAX_HEADERS = 40
MAX_LINE = 512
MAX_HEAD = 8192
MAX_LENGTH = 0x7FFFFFFF  # Content-Length beyond this is refused before anything is started
HEAD_TIMEOUT_MS = 5000  # what IAS waits for the first response byte
READ_TIMEOUT_MS = 10000

from .reason import ReasonError, reason_of  # noqa: E402  (after the ticks fallback)

_TOKEN = b"!#$%&'*+-.^_`|~"


class Deadline:
    """An overall time limit in ms, measured on `clock` (ticks_ms, or a board's virtual ticks)."""

    def __init__(self, ms, clock=None):
        self.clock = clock or ticks_ms
        self.end = ticks_add(self.clock(), ms)

    def left(self):
        return ticks_diff(self.end, self.clock())


def _readinto(stream, view, deadline, timeout_ms):
    """One read into `view`; returns n > 0 or raises ReasonError. The socket timeout is cut to what
    is left of the deadline, so a trickling server cannot keep us past it."""
    wait = timeout_ms
    if deadline is not None:
        left = deadline.left()
        if left <= 0:
            raise ReasonError("deadline")
        if left < wait:
            wait = left
    settimeout = getattr(stream, "settimeout", None)
    if settimeout is not None and wait is not None:
        settimeout(wait / 1000)
    try:
        n = stream.readinto(view)
    except Exception as e:
        if not isinstance(e, (OSError, ReasonError)):
            raise
        err = e if isinstance(e, ReasonError) else ReasonError(reason_of(e), str(e))
        if err.reason == "timeout" and deadline is not None and deadline.left() <= 0:
            err = ReasonError("deadline")  # the wait was cut short by the deadline
        raise err
    if n is None:  # non-blocking stream with nothing to give
        raise ReasonError("timeout")
    if n == 0:
        raise ReasonError("closed")
    return n


class PolledStream:
    """A socket (plain or TLS) read with poll: readinto() returns what has arrived, waiting at
    most the timeout for the first byte. MicroPython's blocking readinto() waits until the buffer
    is full, so without this a server trickling a byte a second could hold the device for ever.
    `errors` maps a socket exception to the one to raise (net.from_exception)."""

    def __init__(self, sock, errors=None, close=None, timeout_ms=READ_TIMEOUT_MS):
        import select

        self.sock = sock
        self.errors = errors
        self._close = close or sock.close
        self.timeout_ms = timeout_ms
        self._in = select.POLLIN
        self._out = select.POLLOUT
        self._poll = select.poll()
        self._poll.register(sock, self._in)
        sock.setblocking(False)

    def settimeout(self, seconds):
        self.timeout_ms = int(seconds * 1000)

    def _wait(self, event, end):
        left = ticks_diff(end, ticks_ms())
        if left <= 0:
            raise OSError(110)  # ETIMEDOUT
        self._poll.modify(self.sock, event)
        self._poll.poll(left)

    def _io(self, fn, arg):
        end = ticks_add(ticks_ms(), self.timeout_ms)
        while True:
            try:
                n = fn(arg)
            except (OSError, ValueError) as e:
                if self.errors is None:
                    raise
                raise self.errors(e)
            if n is not None:
                return n
            self._wait(self._in if fn == self.sock.readinto else self._out, end)

    def readinto(self, buf):
        return self._io(self.sock.readinto, buf)

    def write(self, data):
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += self._io(self.sock.write, view[done:])
        return done

    def close(self):
        try:
            self._poll.unregister(self.sock)
        except (OSError, ValueError, KeyError):
            pass
        self._close()


def _text(raw):
    """Printable ASCII of untrusted bytes; anything else becomes '?'."""
    try:
        s = bytes(raw).decode()
        if all(" " <= c <= "~" for c in s):
            return s
    except UnicodeError:
        pass
    return "".join(chr(b) if 32 <= b < 127 else "?" for b in bytes(raw))


def _is_token(name):
    if not name:
        return False
    for b in name:
        if not (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b in _TOKEN):
            return False
    return True


def _parse_status(line):
    # "HTTP/1.1 200 OK"; the reason phrase may be empty or missing
    if len(line) < 12 or line[:7] != b"HTTP/1." or line[8] != 32:
        raise ReasonError("bad_status", _text(line[:40]))
    code = line[9:12]
    if not code.isdigit() or (len(line) > 12 and line[12] != 32):
        raise ReasonError("bad_status", _text(line[:40]))
    status = int(code)
    if not 100 <= status <= 599:
        raise ReasonError("bad_status", str(status))
    return status, _text(line[13:].strip())


def _parse_length(value):
    value = value.strip()
    if not value or not value.isdigit() or len(value) > 10:
        raise ReasonError("bad_length", _text(value[:20]))
    n = int(value)
    if n > MAX_LENGTH:
        raise ReasonError("bad_length", "too large")
    return n


class Response:
    """status (int), reason (str), headers (dict: lower-case name -> str). The body is read with
    read_body(); bytes already buffered past the head are in buf[_start:_end]."""

    def __init__(self, stream, buf, status, reason, headers, start, end, deadline):
        self.stream = stream
        self.buf = buf
        self.status = status
        self.reason = reason
        self.headers = headers
        self._start = start
        self._end = end
        self.deadline = deadline
        self.length = None
        cl = headers.get("content-length")
        if cl is not None:
            self.length = _parse_length(cl.encode())

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def close(self):
        """Close the connection the response came on."""
        self.stream.close()

    def peek(self, n, deadline=None, timeout_ms=READ_TIMEOUT_MS):
        """The first n body bytes (n <= buffer size) without consuming them: read_body() still
        delivers them. Used to choose an installer from the body's first bytes."""
        n = min(n, len(self.buf))
        view = memoryview(self.buf)
        if self._end - self._start < n:
            pending = self._end - self._start
            if self._start:
                self.buf[0:pending] = view[self._start : self._end]
                self._start, self._end = 0, pending
            while self._end < n:
                self._end += _readinto(
                    self.stream, view[self._end : n], deadline or self.deadline, timeout_ms
                )
        return bytes(view[self._start : self._start + n])

    def read_body(self, sink, length=None, deadline=None, timeout_ms=READ_TIMEOUT_MS):
        """Pass exactly `length` (default Content-Length) body bytes to sink(memoryview), one
        buffer's worth at a time; the view is only valid during the call. Raises ReasonError
        ("closed" on early end, "timeout", "deadline"). Returns the number of bytes."""
        if length is None:
            length = self.length
        if length is None:
            raise ReasonError("bad_length", "no Content-Length")
        deadline = deadline or self.deadline
        view = memoryview(self.buf)
        done = 0
        pending = self._end - self._start
        if pending:
            n = pending if pending < length else length
            sink(view[self._start : self._start + n])
            self._start += n
            done = n
        size = len(self.buf)
        while done < length:
            want = length - done
            if want > size:
                want = size
            n = _readinto(self.stream, view[:want], deadline, timeout_ms)
            sink(view[:n])
            done += n
        return done


def read_head(
    stream,
    buf,
    deadline=None,
    timeout_ms=HEAD_TIMEOUT_MS,
    max_headers=MAX_HEADERS,
    max_line=MAX_LINE,
    max_head=MAX_HEAD,
):
    """Read the status line and headers into `buf` (the one buffer, at least max_line + 2 bytes)
    and return a Response. Header names are case-insensitive (stored lower-case), values trimmed;
    a repeated header's values are joined with ", ". Raises ReasonError on any violation."""
    size = len(buf)
    if size < max_line + 2:
        raise ValueError("buffer smaller than a header line")
    view = memoryview(buf)
    start = fill = total = 0
    status = None
    reason = ""
    headers = {}
    count = 0
    while True:
        nl = buf.find(b"\n", start, fill)
        if nl < 0:
            pending = fill - start
            if pending > max_line + 1:
                raise ReasonError("line_too_long")
            if total + pending > max_head:
                raise ReasonError("head_too_large")
            if fill == size:  # keep the partial line, make room behind it
                buf[0:pending] = view[start:fill]
                start, fill = 0, pending
            try:
                fill += _readinto(stream, view[fill:], deadline, timeout_ms)
            except ReasonError as e:
                if e.reason == "closed" and status is not None:
                    raise ReasonError("closed", "inside the head")
                raise
            continue
        line = bytes(view[start:nl])
        total += nl + 1 - start
        start = nl + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > max_line:
            raise ReasonError("line_too_long")
        if total > max_head:
            raise ReasonError("head_too_large")
        if status is None:
            status, reason = _parse_status(line)
            continue
        if not line:
            return Response(stream, buf, status, reason, headers, start, fill, deadline)
        count += 1
        if count > max_headers:
            raise ReasonError("too_many_headers")
        colon = line.find(b":")
        name = line[:colon] if colon > 0 else b""
        if not _is_token(name):
            raise ReasonError("bad_header", _text(line[:40]))
        key = _text(name).lower()
        value = _text(line[colon + 1 :].strip())
        if key in headers:
            if key == "content-length" and headers[key] != value:
                raise ReasonError("bad_length", "conflicting Content-Length")
            if key != "content-length":
                headers[key] = headers[key] + ", " + value
        else:
            headers[key] = value


def request(stream, method, host, path, headers=()):
    """Write one request head in a single write: request line, Host, then `headers` in order
    ((name, value) pairs). CR, LF or NUL in any part is refused (no header injection)."""
    parts = [_field(method), " ", _field(path), " HTTP/1.1\r\nHost: ", _field(host), "\r\n"]
    for name, value in headers:
        parts.append(_field(name))
        parts.append(": ")
        parts.append(_field(value))
        parts.append("\r\n")
    parts.append("\r\n")
    data = "".join(parts).encode()
    write_all(stream, data)
    return len(data)


def _field(text):
    if "\r" in text or "\n" in text or "\x00" in text:
        raise ReasonError("bad_request", "control character in %r" % text[:40])
    return text


def write_all(stream, data):
    view = memoryview(data)
    sent = 0
    while sent < len(data):
        try:
            n = stream.write(view[sent:])
        except OSError as e:
            raise ReasonError(reason_of(e), str(e))
        except Exception as e:
            reason = getattr(e, "reason", None)
            if isinstance(reason, str):
                raise ReasonError(reason, str(e))
            raise
        if not n:
            raise ReasonError("closed", "while sending")
        sent += n
