# Hand-made ustar headers for hostile-archive tests (MicroPython and CPython).


def octal(value, width):
    return (("%0" + str(width - 1) + "o") % value).encode() + b"\x00"


def header(
    name,
    size=0,
    kind=b"0",
    magic=b"ustar\x0000",
    prefix=b"",
    mode=0o644,
    size_field=None,
    checksum_delta=0,
):
    h = bytearray(512)
    raw = name.encode() if isinstance(name, str) else name
    h[0 : len(raw)] = raw
    h[100:108] = octal(mode, 8)
    h[108:116] = octal(0, 8)
    h[116:124] = octal(0, 8)
    h[124:136] = size_field if size_field is not None else octal(size, 12)
    h[136:148] = octal(0, 12)
    h[156] = kind[0]
    h[257:265] = magic
    h[345 : 345 + len(prefix)] = prefix
    h[148:156] = b" " * 8
    total = sum(h) + checksum_delta
    h[148:156] = ("%06o" % total).encode() + b"\x00 "
    return bytes(h)


def member(name, data=b"", **kw):
    pad = b"\x00" * (-len(data) % 512)
    return header(name, len(data), **kw) + data + pad


def archive(*members, end=True):
    return b"".join(members) + (b"\x00" * 1024 if end else b"")
