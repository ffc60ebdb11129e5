# NOR flash as a MicroPython block device, for littlefs (VfsLfs2) on the unix port.
# Erase sets a 4096-byte block to 0xFF; program can only clear bits (new = old AND data), as on
# the chip. Backed by a bytearray or a file. Counts program and erase operations, and can cut
# the power at operation N: that op lands torn (half of it) or not at all, and from then on the
# device ignores all I/O, as a board without power would.
BLOCK = 4096


class PowerCut(Exception):
    pass


class NorFlash:
    def __init__(self, blocks=256, path=None, cut_at=None, torn=True):
        self.blocks = blocks
        self.path = path
        self.file = None
        if path is None:
            # Filled block by block: one image-sized allocation (b"\xff" * n would be two).
            self.mem = bytearray(blocks * BLOCK)
            erased = b"\xff" * BLOCK
            for i in range(0, blocks * BLOCK, BLOCK):
                self.mem[i : i + BLOCK] = erased
        else:
            self.mem = None
            self.file = open(path, "r+b")
        self.programs = 0
        self.erases = 0
        self.cut_at = cut_at
        self.torn = torn
        self.dead = False
        self._scratch = bytearray(BLOCK)

    @property
    def ops(self):
        return self.programs + self.erases

    def _tick(self):
        # Returns how much of this op may land: 1 all, 0 none, 2 half (torn). Raises after a cut.
        if self.cut_at is not None and self.ops >= self.cut_at:
            self.dead = True
            raise PowerCut()
        if self.cut_at is not None and self.ops + 1 == self.cut_at:
            return 2 if self.torn else 0
        return 1

    def _read(self, offset, buf):
        if self.mem is not None:
            mem = self.mem
            for i in range(len(buf)):  # no slicing: finalisers may call us with the heap locked
                buf[i] = mem[offset + i]
        else:
            self.file.seek(offset)
            self.file.readinto(buf)

    def _write(self, offset, data, n):
        if self.mem is not None:
            mem = self.mem
            for i in range(n):
                mem[offset + i] = data[i]
        else:
            self.file.seek(offset)
            self.file.write(data[:n] if n < len(data) else data)

    def readblocks(self, block, buf, offset=0):
        if self.dead:
            return
        self._read(block * BLOCK + offset, buf)

    def writeblocks(self, block, buf, offset=None):
        if self.dead:
            return
        if offset is None:  # the simple interface: erase, then program whole blocks
            for i in range(len(buf) // BLOCK):
                self.ioctl(6, block + i)
            offset = 0
        self._program(block * BLOCK + offset, buf)

    def _program(self, at, data):
        land = self._tick()
        self.programs += 1
        n = len(data)
        if land == 0:
            self.dead = True
            raise PowerCut()
        if land == 2:
            n = n // 2
        old = self._scratch if n <= BLOCK else bytearray(n)
        view = memoryview(old)[:n]
        self._read(at, view)
        for i in range(n):
            view[i] &= data[i]
        self._write(at, view, n)
        if land == 2:
            self.dead = True
            raise PowerCut()

    def erase(self, block):
        land = self._tick()
        self.erases += 1
        if land == 0:
            self.dead = True
            raise PowerCut()
        ff = self._scratch
        for i in range(BLOCK):
            ff[i] = 0xFF
        self._write(block * BLOCK, ff, BLOCK // 2 if land == 2 else BLOCK)
        if land == 2:
            self.dead = True
            raise PowerCut()

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return BLOCK
        if op == 6:
            if not self.dead:
                self.erase(arg)
            return 0
        if op == 3 and self.file is not None and not self.dead:
            self.file.flush()
        return 0

    def image(self):
        """A copy of the flash contents (RAM-backed devices), for remounting after a cut."""
        return bytearray(self.mem)

    @classmethod
    def from_image(cls, image):
        dev = cls(0)
        dev.blocks = len(image) // BLOCK
        dev.mem = bytearray(image)
        return dev


def mount(dev, where="/flash", mkfs=False):
    import vfs

    if mkfs:
        vfs.VfsLfs2.mkfs(dev)
    fs = vfs.VfsLfs2(dev)
    vfs.mount(fs, where)
    return fs
