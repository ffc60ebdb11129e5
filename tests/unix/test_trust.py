# trust.py on MicroPython: PKCS#1 v1.5 SHA-256 signatures made by `cryptography` verify; bad,
# truncated, other-key and crafted (lax-parser) signatures do not; keys load from PEM files.
import hashlib
import time

import ota_fixtures as fx
from ias import trust
from ias.reason import ReasonError

FIX = fx.make("trust")
MSG = fx.read(FIX + "/msg.bin")


def key(name):
    return trust.key_from_pem(fx.read(FIX + "/" + name + ".pub"), name)


def sig(name):
    return fx.read(FIX + "/" + name + ".sig")


def test_good_signatures_verify_for_each_size():
    for name, bits in (("k2048", 2048), ("k3072", 3072), ("k4096", 4096)):
        k = key(name)
        assert k.bits == bits and k.size == bits // 8 and k.e == 65537
        assert trust.verify(MSG, sig(name), [k]) == name
        assert trust.verify(hashlib.sha256(MSG).digest(), sig(name), [k], hashed=True) == name


def test_wrong_message_bit_flips_and_truncation_fail():
    k = key("k3072")
    s = sig("k3072")
    assert trust.verify(MSG + b"x", s, [k]) is None
    assert trust.verify(MSG[:-1], s, [k]) is None
    for i in (0, 1, 100, len(s) - 1):
        bad = bytearray(s)
        bad[i] ^= 0x01
        assert trust.verify(MSG, bad, [k]) is None, i
    assert trust.verify(MSG, s[:-1], [k]) is None
    assert trust.verify(MSG, b"\x00" + s, [k]) is None
    assert trust.verify(MSG, b"", [k]) is None
    big = (k.n + 1).to_bytes(k.size, "big")  # s >= n is never a signature
    assert trust.verify(MSG, big, [k]) is None


def test_other_key_fails_and_any_of_several_keys_works():
    k2, k3, other = key("k2048"), key("k3072"), key("other")
    assert trust.verify(MSG, sig("k2048"), [other]) is None
    assert trust.verify(MSG, sig("k2048"), [other, k3, k2]) == "k2048"
    assert trust.verify(MSG, sig("other"), [k2, k3]) is None
    try:
        trust.check(MSG, sig("other"), [k2, k3])
        raise AssertionError("check() accepted another key's signature")
    except ReasonError as e:
        assert e.reason == "bad_signature"
    try:
        trust.check(MSG, sig("k2048"), [])
        raise AssertionError("no keys must fail")
    except ReasonError as e:
        assert e.reason == "no_keys"


def test_crafted_encodings_are_refused():
    # Signed with the real private key, so only the encoded message is wrong: a verifier that
    # parses the decrypted block instead of comparing it whole would accept some of these.
    k = key("k2048")
    assert trust.verify(MSG, sig("forged_good"), [k]) == "k2048"  # the crafting is right
    for label in ("bt2", "garbage_tail", "short_pad", "no_null", "sha1_info"):
        assert trust.verify(MSG, sig("forged_" + label), [k]) is None, label


def test_key_parsing_refuses_what_we_do_not_verify():
    try:
        trust.key_from_pem(fx.read(FIX + "/e3.pub"))
        raise AssertionError("e=3 key accepted")
    except ReasonError as e:
        assert e.reason == "bad_key" and "65537" in str(e)
    pem = fx.read(FIX + "/k2048.pub").decode()
    for bad in ("", "garbage", pem.replace("PUBLIC KEY", "CERTIFICATE"), pem[:200] + pem[-30:]):
        try:
            trust.key_from_pem(bad)
            raise AssertionError("accepted %r" % bad[:40])
        except ReasonError:
            pass
    for blob in (b"", b"\x30", b"\x30\x82\xff\xff", bytes(10), b"\x30\x03\x02\x01\x01"):
        try:
            trust.key_from_der(blob)
            raise AssertionError("accepted %r" % blob)
        except ReasonError:
            pass


def test_load_keys_from_folder_skips_broken_files():
    root = "/tmp/ias-keys-%d" % time.time_ns()
    import os

    os.mkdir(root)
    try:
        for name in ("k2048", "k3072"):
            with open(root + "/" + name + ".pub", "wb") as f:
                f.write(fx.read(FIX + "/" + name + ".pub"))
        with open(root + "/broken.pub", "w") as f:
            f.write("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
        with open(root + "/notes.txt", "w") as f:
            f.write("not a key")
        keys = trust.load_keys(root)
        assert [k.name for k in keys] == ["k2048", "k3072"]
        assert trust.verify(MSG, sig("k3072"), keys) == "k3072"
        assert trust.load_keys(root + "/missing") == []
    finally:
        fx.cleanup(root)


def test_security_counters_only_rise():
    class St:
        def __init__(self):
            self.data = {}
            self.saves = 0

        def get(self, k, d=None):
            return self.data.get(k, d)

        def set(self, k, v):
            if self.data.get(k) == v:
                return False
            self.data[k] = v
            self.saves += 1
            return True

    st = St()
    assert trust.counter_floor(st, "app") == 0 and trust.counter_ok(st, "app", 0)
    assert trust.raise_counter(st, "app", 5) and st.saves == 1
    assert not trust.raise_counter(st, "app", 3) and st.saves == 1
    assert trust.counter_floor(st, "app") == 5
    assert not trust.counter_ok(st, "app", 4) and trust.counter_ok(st, "app", 5)
    assert trust.counter_floor(st, "anchors") == 0
    assert trust.raise_counter(st, "anchors", 2) and trust.counter_floor(st, "app") == 5


class _NoPow3:
    """builtins.pow as on a port built without three-argument pow (ESP8266): it raises
    NotImplementedError; counts the three-argument calls that reached it."""

    def __enter__(self):
        import builtins

        self.orig = builtins.pow
        self.calls = 0

        def pow2(*args):
            if len(args) == 3:
                self.calls += 1
                raise NotImplementedError("3-arg pow() not supported")
            return self.orig(*args)

        builtins.pow = pow2
        self.was = trust.HAS_POW3
        trust.HAS_POW3 = trust.has_pow3()  # what the module finds when imported on that port
        return self

    def __exit__(self, *exc):
        import builtins

        builtins.pow = self.orig
        trust.HAS_POW3 = self.was


def test_signatures_verify_without_three_argument_pow():
    assert trust.HAS_POW3  # the unix port has it; the fallback is forced below
    with _NoPow3() as port:
        assert not trust.HAS_POW3
        for name in ("k2048", "k3072", "k4096"):
            k = key(name)
            assert trust.verify(MSG, sig(name), [k]) == name
            bad = bytearray(sig(name))
            bad[5] ^= 0x40
            assert trust.verify(MSG, bad, [k]) is None
        k = key("k2048")
        for label in ("bt2", "garbage_tail", "short_pad", "no_null", "sha1_info"):
            assert trust.verify(MSG, sig("forged_" + label), [k]) is None, label
        assert trust.verify(MSG, sig("other"), [k]) is None
        assert port.calls == 1  # only the detection asked pow for three arguments
    for s, n in ((3, 7), (2, 2**61 - 1), (12345678901234567890, 2**127 - 1)):
        assert trust.pow65537(s, n) == pow(s, 65537, n)


def test_verify_time_per_key_size():
    digest = hashlib.sha256(MSG).digest()
    for name in ("k2048", "k3072", "k4096"):
        k = key(name)
        s = sig(name)
        runs = 20
        t0 = time.ticks_us()
        for _ in range(runs):
            assert trust.verify_key(digest, s, k)
        us = time.ticks_diff(time.ticks_us(), t0) // runs
        print("RSA-%d verify: %d us (unix port, mean of %d)" % (k.bits, us, runs))


def test_zz_cleanup():
    fx.cleanup(FIX)
