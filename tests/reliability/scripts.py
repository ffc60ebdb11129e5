"""Scripts for HostileServer: one misbehaviour each, named for the phase it hits."""

import hashlib

# A gzip header as `ias bundle build --gzip` writes it (a 1 KiB window declared in the extra
# field, so the device takes it up), then bytes that are no deflate data.
GZIP_START = (
    b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x02\x03\x05\x00WB\x01\x00\x0a" + bytes(range(256)) * 3
)


def update_head(length, body=b"", md5=None, extra=""):
    md5 = md5 or hashlib.md5(body).hexdigest()
    return (
        "HTTP/1.1 200 OK\r\nContent-Length: %s\r\nx-name: IASBlink\r\nx-ver: 9.9\r\n"
        "x-MD5: %s\r\n%sConnection: close\r\n\r\n" % (length, md5, extra)
    ).encode()


def _answer(data, then="close_notify"):
    def script(c):
        c.handshake()
        c.read_request()
        c.send(data)
        if then == "rst":
            c.rst()
        elif then == "hold":
            c.hold(60)
        else:
            c.close_notify()

    return script


def rst_in_handshake(c):
    c.client_hello()
    c.rst()


def fin_in_handshake(c):
    c.client_hello()


def plain_http_on_tls_port(c):
    c.client_hello()
    c.raw(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def alert_in_handshake(c):
    c.client_hello()
    c.raw(b"\x15\x03\x03\x00\x02\x02\x28")  # fatal handshake_failure, plaintext


def silent_in_handshake(c):
    c.client_hello()
    c.hold(60)


def rst_after_request(c):
    c.handshake()
    c.read_request()
    c.rst()


def close_after_request(c):
    c.handshake()
    c.read_request()
    c.close_notify()


def silent_after_request(c):
    c.handshake()
    c.read_request()
    c.hold(60)


def truncated_head(c):
    _answer(b"HTTP/1.1 200 OK\r\nContent-Le")(c)


def rst_mid_head(c):
    _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5", then="rst")(c)


def silent_mid_head(c):
    _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5", then="hold")(c)


def headers_10000(c):
    _answer(b"HTTP/1.1 200 OK\r\n" + b"x-a: b\r\n" * 10000 + b"\r\n")(c)


def header_line_1mb(c):
    _answer(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (1 << 20) + b"\r\n\r\n")(c)


def status_line_1mb(c):
    _answer(b"HTTP/1.1 200 " + b"O" * (1 << 20) + b"\r\n\r\n")(c)


def garbage_status(c):
    _answer(b"HTPT/1.1 two hundred\r\n\r\n")(c)


def binary_noise(c):
    _answer(bytes((i * 131 + 7) & 0xFF for i in range(4096)))(c)


def nul_in_header(c):
    _answer(b"HTTP/1.1 200 OK\r\nx-name: a\x00b\r\nContent-Length: 1\r\n\r\nx")(c)


def negative_length(c):
    _answer(update_head("-1"))(c)


def huge_length(c):
    _answer(update_head("99999999999999999999999999"))(c)


def length_2_31(c):
    _answer(update_head(str(1 << 31)))(c)


def two_lengths(c):
    _answer(update_head("10", extra="Content-Length: 20\r\n"))(c)


def chunked_body(c):
    _answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-name: IASBlink\r\nx-ver: 9\r\n"
        b"x-MD5: " + b"0" * 32 + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )(c)


def missing_md5(c):
    _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-name: a\r\nx-ver: 1\r\n\r\nhello")(c)


def bigger_than_flash(c):
    # a well-formed head promising 100 MB: the installer refuses before writing
    _answer(update_head(str(100 << 20), md5="0" * 32) + GZIP_START, then="hold")(c)


def body_longer_than_declared(c):
    # x-MD5 matches the declared part; what follows must be ignored, and the declared part
    # is no valid signed bundle: refused by the installer, nothing installed
    body = GZIP_START[:600]
    _answer(update_head(len(body), body) + body + b"EXTRA" * 2000)(c)


def body_shorter_than_declared(c):
    body = GZIP_START[:600]
    _answer(update_head(len(body) + 4000, body) + body)(c)


def md5_mismatch(c):
    body = GZIP_START[:700]
    _answer(update_head(len(body), md5=hashlib.md5(b"other").hexdigest()) + body)(c)


def rst_mid_body(c):
    body = GZIP_START
    _answer(update_head(len(body) * 4, body) + body, then="rst")(c)


def silent_mid_body(c):
    body = GZIP_START
    _answer(update_head(len(body) * 4, body) + body, then="hold")(c)


def close_notify_mid_body(c):
    body = GZIP_START
    _answer(update_head(len(body) * 4, body) + body)(c)


def alert_mid_body(c):
    body = GZIP_START
    c.handshake()
    c.read_request()
    c.send(update_head(len(body) * 4, body) + body)
    c.raw(b"\x15\x03\x03\x00\x02\x02\x50")  # a plaintext fatal alert inside the session


def tampered_record_mid_body(c):
    body = GZIP_START * 4
    c.handshake()
    c.read_request()
    c.send(update_head(len(body), body))

    def flip(data):  # a bit flip in the record's ciphertext: the MAC check must fail
        b = bytearray(data)
        b[-3] ^= 0x40
        return bytes(b)

    c.send(body, tamper=flip)
    c.hold(30)


def garbage_record_mid_body(c):
    body = GZIP_START
    c.handshake()
    c.read_request()
    c.send(update_head(len(body) * 4, body) + body)
    c.raw(b"\x17\x03\x03\x00\x40" + bytes(64))  # an application-data record of zeros
    c.hold(30)
