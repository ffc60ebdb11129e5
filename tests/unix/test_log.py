# The device log (log.py) inside the unix port: lines wait in RAM (bounded), flush() appends
# them in one write and rotates /log.txt to /log.1 so the log never passes about 2 x MAX_FILE,
# tail() reads both files and the RAM lines in order, and a failing flash never raises.
import os

from ias import log

DIR = "/tmp/ias_log_test"


def _fresh():
    try:
        for n in os.listdir(DIR):
            os.remove(DIR + "/" + n)
    except OSError:
        os.mkdir(DIR)
    log.flush(DIR + "/drop.txt", DIR + "/drop.1")  # lines left by an earlier test
    log.PATH, log.OLD = DIR + "/log.txt", DIR + "/log.1"
    log.set_clock(lambda: 1764700000)


def _size(p):
    try:
        return os.stat(p)[6]
    except OSError:
        return 0


def test_lines_wait_in_ram_until_flush():
    _fresh()
    log.info("t", "one")
    log.warn("t", "two")
    assert _size(log.PATH) == 0  # nothing written yet
    assert log.pending() == ["1764700000 I t: one", "1764700000 W t: two"]
    assert log.flush() is True
    with open(log.PATH) as f:
        assert f.read() == "1764700000 I t: one\n1764700000 W t: two\n"
    assert log.pending() == []
    assert log.flush() is False  # nothing held: nothing written
    assert _size(log.PATH) == 40


def test_ram_is_bounded_and_lines_are_cut():
    _fresh()
    for i in range(log.MAX_LINES + 10):
        log.info("t", "n%d" % i)
    held = log.pending()
    assert len(held) == log.MAX_LINES and held[0].endswith("n10")
    log.info("t", "x" * 500)
    assert len(log.pending()[-1]) == log.MAX_LINE
    log.flush()


def test_rotation_keeps_the_log_bounded_and_tail_in_order():
    _fresh()
    for i in range(600):
        log.info("t", "line %d" % i)
        if i % 7 == 6:
            log.flush()
        assert _size(log.PATH) <= log.MAX_FILE and _size(log.OLD) <= log.MAX_FILE
    assert _size(log.OLD) > log.MAX_FILE // 2  # rotated, the older half kept
    last = log.tail(30)
    assert len(last) == 30
    assert [ln.split(": ", 1)[1] for ln in last] == ["line %d" % i for i in range(570, 600)]
    log.flush()


def test_exc_flushes_at_once():
    _fresh()
    log.info("t", "before")
    log.exc("t", "it broke", ValueError("bad"))
    with open(log.PATH) as f:
        text = f.read()
    assert "I t: before" in text and "E t: it broke: ValueError('bad',)" in text


def test_a_failing_flash_never_raises_and_keeps_the_lines():
    _fresh()
    log.info("t", "kept")
    assert log.flush(DIR + "/no/such/dir.txt", DIR + "/no/such/dir.1") is False
    assert log.pending()[-1].endswith("kept")
    assert log.flush() is True


def test_no_clock_gives_zero_time():
    _fresh()
    log.set_clock(None)
    log.info("t", "early")
    assert log.pending()[-1] == "0 I t: early"
    log.flush()
