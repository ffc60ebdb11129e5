# Power-safe file writes: littlefs commits a file at close, and rename replaces atomically,
# so write-temp-then-rename leaves the old or the new content after any power cut.
import os


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def is_dir(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


def makedirs(path):
    built = ""
    for part in path.strip("/").split("/"):
        built += "/" + part
        if not is_dir(built):
            os.mkdir(built)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def read_json(path, default=None):
    """The JSON value in `path`, or `default` when it is missing or not JSON."""
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def same_content(path, data):
    """True when the file holds exactly `data`, compared 256 bytes at a time."""
    try:
        with open(path, "rb") as f:
            if f.seek(0, 2) != len(data):
                return False
            f.seek(0)
            view = memoryview(data)
            buf = bytearray(256)
            pos = 0
            while pos < len(data):
                n = f.readinto(buf)
                if not n or buf[:n] != view[pos : pos + n]:
                    return False
                pos += n
    except OSError:
        return False
    return True


def write_atomic(path, data):
    """Replace `path` with `data`, or leave it as it was. Returns False when nothing changed."""
    if isinstance(data, str):
        data = data.encode()
    if same_content(path, data):
        return False
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)
    return True


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def rmtree(path):
    """Remove a directory tree (littlefs has no recursive delete)."""
    if not exists(path):
        return
    if not is_dir(path):
        os.remove(path)
        return
    # After a power cut littlefs can list an entry twice until its next commit; a second pass
    # clears what the first could not.
    for _ in range(3):
        for name in [e[0] for e in os.ilistdir(path)]:
            try:
                rmtree(path + "/" + name)
            except OSError:
                pass
        try:
            os.rmdir(path)
            return
        except OSError:
            pass
    os.rmdir(path)
