"""Issue 17 item 2, end to end: an anchor-set change never cuts a device off (design §1 rule 8).

A virtual ESP32 trusts root A, which expires in 25 days; the server still presents A. The
operator's signed set lists only the new root B. The device fetches it by itself (the 30-day
refresh) and keeps it pending: it calls home through A until the server moves to B, and only a
call home that B verifies confirms the set and retires A. A man in the middle breaking
handshakes while the set is pending neither reverts nor rejects it."""

import hashlib

from tests.scenario import make_chain, make_world, staged_firmware  # noqa: F401 (fixtures)

UPDATES = "/ota/updates"
IAS_NAME = "iasRootCa.cer"


def anchor_name(root):
    return "a-%s.cer" % hashlib.sha256(root.der).hexdigest()[:12]


def boot_and_call(world):
    """One power-on and main-loop cycle; the verified call homes the server saw."""
    mark = world.mark()
    world.boot(1)
    return [r for r in world.requests(mark, UPDATES) if r["tls"]]


def expiring_world(make_world):  # noqa: F811
    a = make_chain("A", root_days=(-1000, 25))  # the root the server uses today, 25 days left
    b = make_chain("B")
    world = make_world(trust=[a.root], serve=a)
    world.sign_anchors(2, [b.root])  # the new set drops A
    assert boot_and_call(world), world.console()[-3000:]
    state = world.state()
    assert state["anchors_pending"]["version"] == 2, state  # fetched by the 30-day refresh
    assert "refreshing" in world.console()
    assert world.anchor_files() == sorted([IAS_NAME, anchor_name(b.root)])
    return world, a, b


def old_root_kept_until_the_server_moves(make_world):  # noqa: F811
    world, a, b = expiring_world(make_world)
    for _ in range(3):  # the server has not moved: root A keeps verifying, the set waits
        assert boot_and_call(world), world.console()[-3000:]
        state = world.state()
        assert state["anchors_pending"]["version"] == 2 and "last_error" not in state
        assert IAS_NAME in world.anchor_files()

    world.serve(b)  # the server moves to the new root
    assert boot_and_call(world), world.console()[-3000:]
    state = world.state()
    assert state.get("anchors_version") == 2 and "anchors_pending" not in state
    assert world.anchor_files() == [anchor_name(b.root)]  # A retired once B verified
    assert "bundle v2 confirmed" in world.console()
    assert boot_and_call(world)  # and through B from now on


def mitm_while_pending(make_world):  # noqa: F811
    world, a, b = expiring_world(make_world)
    world.serve(make_chain("M"))  # a man in the middle: a chain no anchor verifies
    for _ in range(4):
        assert boot_and_call(world) == []
    state = world.state()
    assert state["anchors_pending"]["version"] == 2, state
    assert "anchors_rejected" not in state
    assert world.anchor_files() == sorted([IAS_NAME, anchor_name(b.root)])

    world.serve(a)  # the attack ends: home through the old root, the set still pending
    assert boot_and_call(world), world.console()[-3000:]
    assert world.state()["anchors_pending"]["version"] == 2
    world.serve(b)  # and the server's move confirms it
    assert boot_and_call(world), world.console()[-3000:]
    assert world.state().get("anchors_version") == 2
    assert world.anchor_files() == [anchor_name(b.root)]


# The scenarios are also attack cases of the reliability ledger (tests/reliability).
def test_set_dropping_the_old_root_waits_for_the_server_to_move(make_world):  # noqa: F811
    old_root_kept_until_the_server_moves(make_world)


def test_handshake_failures_while_pending_do_not_reject_the_set(make_world):  # noqa: F811
    mitm_while_pending(make_world)
