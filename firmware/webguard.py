# The config app's server hardening (design §7): everything a browser sends is hostile until
# checked. The request head and body are size-limited and never read past Content-Length, a
# refused body is drained so the client sees our reply, connections are capped and timed out,
# replies are never cached, and text shown in HTML is escaped. Against other web pages the
# visitor opens (design §7): the Host must name the device (DNS rebinding), and a request that
# changes anything must be same-origin (a missing or `null` Origin is foreign) and carry the
# session's token, which only a same-origin page can read (GET /token).
# webapp.py holds the routes; guarded_app() is the Microdot app they are added to.
import asyncio

from microdot import Microdot, Request, Response
from microdot.microdot import HTTPException
from microdot.multipart import FileUpload, FormDataIter

from .reason import const

MAX_FORM = const(2048)  # bytes of any request body but an upload
MAX_UPLOAD = const(12 * 1024)  # a certificate upload, multipart framing included
MAX_CERT = const(8 * 1024)  # one certificate file
MAX_HEAD = const(4096)  # request line and headers together
MAX_PARTS = const(40)  # multipart parts in one request
MAX_CONNECTIONS = const(6)  # browsers preconnect idle sockets; lwIP has about 10
REQUEST_TIMEOUT_S = const(20)  # a client that sends slower than this is dropped
DRAIN_MAX = const(64 * 1024)  # a refused body up to this size is read and dropped, so the client
DRAIN_S = const(1)  # sees our reply rather than a reset
UPLOAD_PATH = "/certupl"  # the one route that takes MAX_UPLOAD
TOKEN_HEADER = "X-IAS-Token"  # or the query argument `t`, for forms and IAS-shaped tooling
SAFE_METHODS = ("GET", "HEAD")  # the only methods that may not change anything

NO_CACHE = {
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "-1",
}


class BadRequest(HTTPException):
    """Refuse the request; Microdot sends `message` as the plain-text body."""

    def __init__(self, message, status=400):
        super().__init__(status, message)


def escape(value):
    """Text made safe inside HTML element content and attribute values."""
    return (
        str(value)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def text(s, status=200):
    """A plain-text reply."""
    return Response(s, status, {"Content-Type": "text/plain; charset=UTF-8"})


class _Body:
    """The request body, never read past Content-Length; running dry early is a bad request
    (Microdot's multipart parser would otherwise spin on a truncated body)."""

    def __init__(self, stream, length):
        self._stream = stream
        self._left = length

    async def read(self, n=-1):
        if n == 0:
            return b""
        if self._left <= 0:
            raise BadRequest("malformed multipart body")
        if n < 0 or n > self._left:
            n = self._left
        data = await self._stream.read(n)
        if not data:
            raise BadRequest("request body ended early")
        self._left -= len(data)
        return data


class _Multipart:
    """What Microdot's multipart parser reads of a request (its content type and body stream),
    with the body bounded by Content-Length."""

    def __init__(self, req):
        self.content_type = req.content_type
        self.stream = _Body(req.stream, req.content_length)


class _Conn:
    """The connection's reader, with a cap on the request head (Microdot caps each line but not
    the number of header lines), and a count of the body bytes read, so a refused body can be
    drained before closing (closing on unread data resets the connection, and the browser
    would show that instead of our reply)."""

    def __init__(self, reader):
        self._r = reader
        self._head = 0
        self.head_done = False
        self.length = 0  # Content-Length, as far as we can tell
        self.body_read = 0

    async def readline(self):
        line = await self._r.readline()
        self._head += len(line)
        if self._head > MAX_HEAD:
            raise ValueError("request head too large")
        if line in (b"\r\n", b"\n"):
            self.head_done = True
        elif line[:15].lower() == b"content-length:":
            # Checked here: Microdot would wait forever to read a negative length.
            self.length = int(line[15:].strip())  # ValueError: a bad request
            if self.length < 0:
                raise ValueError("negative Content-Length")
        return line

    async def read(self, n=-1):
        data = await self._r.read(n)
        self.body_read += len(data)
        return data

    async def readexactly(self, n):
        data = await self._r.readexactly(n)
        self.body_read += len(data)
        return data

    async def drain(self):
        """Read and drop what the client still sends of this request (bounded in size)."""
        if self.head_done:
            left = min(self.length - self.body_read, DRAIN_MAX)
        else:
            left = MAX_HEAD  # a refused head: whatever is already on its way
        while left > 0:
            data = await self._r.read(min(left, 512))
            if not data:
                break
            left -= len(data)


class _Writer:
    """The connection's writer; closing drains the unread request first, for a short while."""

    def __init__(self, writer, conn):
        self._w = writer
        self._conn = conn

    async def awrite(self, data):
        await self._w.awrite(data)

    def get_extra_info(self, name):
        return self._w.get_extra_info(name)

    async def aclose(self):
        # A refused head: only what is already on its way, not what a slow client might send.
        wait = DRAIN_S if self._conn.head_done else 0.2
        try:
            await asyncio.wait_for(self._conn.drain(), wait)
        except Exception:  # a timeout or a reset: close anyway
            pass
        await self._w.aclose()


class _Server(Microdot):
    # Caps the connections served at once and the time one request may take.
    active = 0

    async def handle_request(self, reader, writer):
        if self.active >= MAX_CONNECTIONS:
            await writer.aclose()
            return
        self.active += 1
        conn = _Conn(reader)
        try:
            await asyncio.wait_for(
                Microdot.handle_request(self, conn, _Writer(writer, conn)), REQUEST_TIMEOUT_S
            )
        except (asyncio.TimeoutError, OSError):
            try:
                await writer.aclose()
            except OSError:
                pass
        finally:
            self.active -= 1


async def _read_file(upload):
    # In steps of the parser's buffer size: a bigger step lets Microdot's parser swallow a
    # boundary split across two reads.
    data = b""
    while True:
        chunk = await upload.read(FormDataIter.buffer_size)
        if not chunk:
            return data
        data += chunk
        if len(data) > MAX_CERT:
            raise BadRequest("file larger than %d bytes" % MAX_CERT, 413)


async def read_form(req, files=False):
    """The form fields of a urlencoded or multipart body as a dict (first value of each name).
    With `files`, also returns the uploaded files as [(field, filename, bytes)]."""
    ctype = (req.content_type or "").split(";")[0].strip().lower()
    got, uploads = {}, []
    if ctype == "application/x-www-form-urlencoded":
        for key in req.form or {}:
            got[key] = req.form[key]
    elif ctype == "multipart/form-data":
        parts = 0
        try:
            async for name, value in FormDataIter(_Multipart(req)):
                parts += 1
                if parts > MAX_PARTS:
                    raise BadRequest("too many form fields")
                if isinstance(value, FileUpload):
                    if not files:
                        raise BadRequest("no file expected here")
                    data = await _read_file(value)
                    uploads.append((name, value.filename, data))
                elif name not in got:
                    got[name] = value
        except (IndexError, KeyError, ValueError) as e:  # UnicodeError is a ValueError
            raise BadRequest("malformed multipart body (%s)" % e)
    elif req.content_length:
        raise BadRequest("send the form as urlencoded or multipart data")
    return (got, uploads) if files else got


def random_bytes(n):
    try:
        import os

        return os.urandom(n)
    except (ImportError, AttributeError):
        import random

        return bytes(random.getrandbits(8) for _ in range(n))


def new_token():
    """A config session's token: 128 random bits as hex."""
    return "".join("%02x" % b for b in random_bytes(16))


def same_token(given, token):
    """`given` == `token`, in a time that does not depend on where they differ."""
    if not isinstance(given, str) or len(given) != len(token):
        return False
    diff = 0
    for a, b in zip(given, token):
        diff |= ord(a) ^ ord(b)
    return diff == 0


def _refusal(req, hosts, token):
    # The request's body size, Host, origin and token, checked before any route runs.
    limit = MAX_UPLOAD if req.path == UPLOAD_PATH else MAX_FORM
    if req.content_length < 0:
        return text("bad Content-Length", 400)
    if req.content_length > limit:
        return text("request body too large", 413)
    names = hosts()
    host = req.headers.get("Host", "").lower()
    safe = req.method in SAFE_METHODS
    if host not in names:
        # A page on another name (DNS rebinding) reads nothing; a GET is sent to the device's
        # own address (what a phone's connectivity probe should meet), anything else refused.
        if safe:
            return Response("", 302, {"Location": "http://%s/" % names[0]})
        return text("refused: this device answers only to %s" % names[0], 403)
    if safe:
        return None
    if req.headers.get("Origin") != "http://" + host:
        return text("refused: the request did not come from this device's page", 403)
    given = req.headers.get(TOKEN_HEADER) or req.args.get("t")
    if not same_token(given, token):
        return text("refused: the page's token is missing or old; reload the page", 403)
    return None


def _no_cache(req, res):
    for k in NO_CACHE:
        res.headers[k] = NO_CACHE[k]
    return res


def guarded_app(on_request=None, hosts=None, token=None):
    """A Microdot app with every guard in place; the caller adds its routes. `on_request()`
    runs first for every request (config mode's idle timer). `hosts()` gives the Host values
    that name the device (first: the one to send strangers to); `token` is the session's."""
    app = _Server()
    Request.max_content_length = MAX_UPLOAD
    Request.max_body_length = 4096  # larger bodies are streamed, not buffered
    Request.max_readline = 1024
    if hosts is None:
        hosts = lambda: ("192.168.4.1",)  # noqa: E731  (the access point's address)
    if token is None:
        token = new_token()

    @app.before_request
    def _limits(req):
        if on_request is not None:
            on_request()
        return _refusal(req, hosts, token)

    app.after_request(_no_cache)
    app.after_error_request(_no_cache)

    @app.errorhandler(UnicodeError)
    def _bad_utf8(req, e):
        return text("invalid UTF-8", 400)

    return app
