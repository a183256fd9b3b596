"""The handshake state machines (scaler.protocol.handshake), driven directly without I/O.

Every frame exchanged goes through the real codec (encode, handshake size limit, decode),
so these tests also check that the handshake frames survive the wire. Both roles answer
each frame with a Step(reply, failure, done), and ``run`` drives them with one code path,
as Connection does.
"""

import re

import pytest

from scaler.protocol import HandshakeError as ExportedHandshakeError
from scaler.protocol.codec import decode, encode, frame_length
from scaler.protocol.handshake import (HANDSHAKE_FRAME_LIMIT, NONCE_BYTES, AcceptorHandshake, ConnectorHandshake,
                                       HandshakeError, Step, normalize_key)
from scaler.protocol.messages import (MAGIC, PROTOCOL_VERSION, ROLE_CLIENT, ROLE_MONITOR, ROLE_WORKER, Accepted,
                                      Heartbeat, Hello, Proof, Rejected, TaskSubmit, Welcome)

ALL_ROLES = (ROLE_CLIENT, ROLE_WORKER)


def wire(msg):
    """What the peer receives: encoded, length-checked against the handshake limit, decoded."""
    frame = encode(msg)
    assert frame_length(frame[:8], HANDSHAKE_FRAME_LIMIT) == len(frame) - 8
    return decode(bytearray(frame[8:]))


class Outcome:
    def __init__(self):
        self.connector_failure = None  # failure reason of the connector's last Step
        self.acceptor_failure = None  # failure reason of the acceptor's last Step
        self.acceptor_replies = []
        self.frames = 0


def run(connector, acceptor, max_frames=10):
    """Drive both sides the way Connection does, until success or a failure on either side."""
    out = Outcome()
    assert acceptor.start() is None  # the acceptor speaks second
    frame, receiver, peer = connector.start(), acceptor, connector
    while out.frames < max_frames:
        out.frames += 1
        step = receiver.receive(wire(frame))
        assert isinstance(step, Step) and step.done == receiver.done
        if receiver is acceptor and step.reply is not None:
            out.acceptor_replies.append(step.reply)
        if step.failure is not None:
            assert not step.done
            _record_failure(out, receiver is acceptor, step.failure)
            if step.reply is not None:  # sent before closing: the peer reads it and fails too
                assert isinstance(step.reply, Rejected)
                last = peer.receive(wire(step.reply))
                assert last.reply is None and last.failure is not None and not last.done
                _record_failure(out, peer is acceptor, last.failure)
            return out
        if step.reply is None:
            assert step.done, "neither replied nor failed nor done"
            return out
        frame, receiver, peer = step.reply, peer, receiver
    pytest.fail("handshake did not terminate")


def _record_failure(out, on_acceptor, failure):
    if on_acceptor:
        out.acceptor_failure = failure
    else:
        out.connector_failure = failure


def connector_fails(connector, msg, match=""):
    """Feed ``msg``; the Step must fail with a reason matching ``match`` and carry it back as a
    Rejected (except in answer to a Rejected). Returns the reason."""
    step = connector.receive(wire(msg))
    assert step.failure is not None and re.search(match, step.failure), step
    assert not step.done and not connector.done
    if isinstance(msg, Rejected):
        assert step.reply is None
    else:
        assert step.reply == Rejected(step.failure)
    return step.failure


def hello(version=PROTOCOL_VERSION, role=ROLE_CLIENT, magic=MAGIC, nonce=b"n" * NONCE_BYTES):
    return Hello(magic, version, role, nonce)


# --- successful handshakes ----------------------------------------------------------------------

def test_no_key_success():
    c, a = ConnectorHandshake(ROLE_CLIENT, None), AcceptorHandshake(None, ALL_ROLES)
    out = run(c, a)
    assert out.connector_failure is None and out.acceptor_failure is None
    assert c.done and a.done
    assert a.role == ROLE_CLIENT
    assert [type(r) for r in out.acceptor_replies] == [Welcome, Accepted]
    welcome = out.acceptor_replies[0]
    assert welcome.auth_required is False and welcome.version == PROTOCOL_VERSION


def test_steps_of_a_successful_handshake():
    c, a = ConnectorHandshake(ROLE_CLIENT, b"k"), AcceptorHandshake(b"k", ALL_ROLES)
    welcome = a.receive(wire(c.start()))
    assert isinstance(welcome.reply, Welcome) and welcome.failure is None and not welcome.done
    proof = c.receive(wire(welcome.reply))
    assert isinstance(proof.reply, Proof) and proof.failure is None and not proof.done
    accepted = a.receive(wire(proof.reply))
    assert accepted == Step(Accepted(), None, True) and a.done
    assert c.receive(wire(accepted.reply)) == Step(None, None, True) and c.done


@pytest.mark.parametrize("connector_key, acceptor_key", [
    (b"secret", b"secret"),
    ("s\u00e9cret \U0001F511", "s\u00e9cret \U0001F511".encode("utf-8")),
    (bytearray(b"k" * 200), b"k" * 200),
])
def test_same_key_success(connector_key, acceptor_key):
    c = ConnectorHandshake(ROLE_WORKER, normalize_key(connector_key))
    a = AcceptorHandshake(normalize_key(acceptor_key), ALL_ROLES)
    out = run(c, a)
    assert out.connector_failure is None and out.acceptor_failure is None
    assert c.done and a.done and a.role == ROLE_WORKER
    welcome = out.acceptor_replies[0]
    assert welcome.auth_required is True and len(welcome.proof) == 32


def test_nonces_are_fresh_and_sized():
    nonces = {ConnectorHandshake(ROLE_CLIENT, None).nonce for _ in range(20)}
    nonces |= {AcceptorHandshake(None, ALL_ROLES).nonce for _ in range(20)}
    assert len(nonces) == 40
    assert all(len(n) == NONCE_BYTES for n in nonces)


def test_handshake_error_is_exported():
    assert ExportedHandshakeError is HandshakeError


# --- key mismatches -----------------------------------------------------------------------------

def test_wrong_key_connector_detects_and_acceptor_reports_failure():
    c = ConnectorHandshake(ROLE_CLIENT, b"right")
    a = AcceptorHandshake(b"wrong", ALL_ROLES)
    out = run(c, a)
    assert out.connector_failure is not None and "authentication" in out.connector_failure
    assert out.acceptor_failure is not None and "authentication" in out.acceptor_failure
    assert not c.done and not a.done


def test_acceptor_rejects_wrong_proof_from_connector_that_skips_verification():
    a = AcceptorHandshake(b"key", ALL_ROLES)
    welcome, failure, _ = a.receive(wire(hello()))
    assert isinstance(welcome, Welcome) and failure is None
    reply, failure, _ = a.receive(wire(Proof(b"\x00" * 32)))
    assert isinstance(reply, Rejected)
    assert failure is not None and "authentication" in failure and "authentication" in reply.reason
    assert not a.done


def test_acceptor_with_key_rejects_empty_proof():
    a = AcceptorHandshake(b"key", ALL_ROLES)
    a.receive(wire(hello()))
    reply, failure, _ = a.receive(wire(Proof(b"")))
    assert isinstance(reply, Rejected) and failure and not a.done


def test_acceptor_proof_cannot_be_reflected_as_connector_proof():
    a = AcceptorHandshake(b"key", ALL_ROLES)
    welcome, _, _ = a.receive(wire(hello()))
    reply, failure, _ = a.receive(wire(Proof(welcome.proof)))
    assert isinstance(reply, Rejected) and failure and not a.done


def test_proof_cannot_be_replayed_on_another_connection():
    c = ConnectorHandshake(ROLE_CLIENT, b"key")
    a1 = AcceptorHandshake(b"key", ALL_ROLES)
    first_hello = c.start()
    welcome, _, _ = a1.receive(wire(first_hello))
    proof = c.receive(wire(welcome)).reply
    assert isinstance(proof, Proof)
    # an eavesdropper replays the same Hello and Proof to a new connection
    a2 = AcceptorHandshake(b"key", ALL_ROLES)
    a2.receive(wire(first_hello))
    reply, failure, _ = a2.receive(wire(proof))
    assert isinstance(reply, Rejected) and failure and not a2.done
    # the genuine connection still works
    reply, failure, _ = a1.receive(wire(proof))
    assert isinstance(reply, Accepted) and failure is None and a1.done


def test_connector_without_key_vs_acceptor_with_key():
    c = ConnectorHandshake(ROLE_CLIENT, None)
    a = AcceptorHandshake(b"key", ALL_ROLES)
    out = run(c, a)
    assert out.connector_failure is not None and "key" in out.connector_failure
    assert "requires" in out.connector_failure
    assert out.acceptor_failure is not None
    assert not c.done and not a.done


def test_connector_with_key_vs_acceptor_without_key():
    c = ConnectorHandshake(ROLE_CLIENT, b"key")
    a = AcceptorHandshake(None, ALL_ROLES)
    out = run(c, a)
    assert out.connector_failure is not None and "key" in out.connector_failure
    # reported as "the server has no key", not as a failed proof
    assert "authentication failed" not in out.connector_failure
    assert out.acceptor_failure is not None
    assert not c.done and not a.done


def test_connector_rejects_welcome_with_bad_proof():
    c = ConnectorHandshake(ROLE_CLIENT, b"key")
    c.start()
    connector_fails(c, Welcome(PROTOCOL_VERSION, True, b"a" * NONCE_BYTES, b"b" * 32), "authentication")


# --- version, magic, role -----------------------------------------------------------------------

@pytest.mark.parametrize("version", [PROTOCOL_VERSION + 1, 0, 65535])
def test_acceptor_rejects_other_version_with_clear_reason(version):
    a = AcceptorHandshake(None, ALL_ROLES)
    reply, failure, _ = a.receive(wire(hello(version=version)))
    assert isinstance(reply, Rejected)
    assert "version" in reply.reason and str(version) in reply.reason and str(PROTOCOL_VERSION) in reply.reason
    assert failure == reply.reason
    assert not a.done
    # the connector turns the Rejected into a user-facing error with the reason
    c = ConnectorHandshake(ROLE_CLIENT, None)
    c.start()
    assert str(version) in connector_fails(c, reply, "version")


def test_connector_rejects_welcome_of_other_version():
    c = ConnectorHandshake(ROLE_CLIENT, None)
    c.start()
    connector_fails(c, Welcome(PROTOCOL_VERSION + 1, False, b"a" * NONCE_BYTES, b""), "version")


@pytest.mark.parametrize("magic", [0, MAGIC + 1, 0x47455420])  # 0x474554 = "GET"
def test_bad_magic_fails(magic):
    a = AcceptorHandshake(None, ALL_ROLES)
    reply, failure, _ = a.receive(wire(hello(magic=magic)))
    assert failure is not None and "magic" in failure
    assert reply is None or isinstance(reply, Rejected)
    assert not a.done
    # the same acceptor must not then accept a Proof
    reply, failure, _ = a.receive(wire(Proof(b"")))
    assert failure is not None and not a.done


def test_role_not_allowed_is_rejected():
    a = AcceptorHandshake(None, (ROLE_CLIENT,))
    c = ConnectorHandshake(ROLE_WORKER, None)
    out = run(c, a)
    assert out.acceptor_failure is not None and "worker" in out.acceptor_failure
    rejected = out.acceptor_replies[-1]
    assert isinstance(rejected, Rejected) and "worker" in rejected.reason
    assert out.connector_failure is not None and "worker" in out.connector_failure
    assert not a.done and not c.done


def test_unknown_role_is_rejected():
    a = AcceptorHandshake(None, ALL_ROLES)
    reply, failure, _ = a.receive(wire(hello(role=99)))
    assert isinstance(reply, Rejected) and "99" in reply.reason and failure


def test_role_checked_before_key():
    a = AcceptorHandshake(b"key", (ROLE_MONITOR,))
    reply, failure, _ = a.receive(wire(hello(role=ROLE_CLIENT)))
    assert isinstance(reply, Rejected) and "client" in reply.reason and failure


@pytest.mark.parametrize("nonce", [b"", b"x" * (NONCE_BYTES - 1), b"x" * (NONCE_BYTES + 1)])
def test_malformed_nonce(nonce):
    a = AcceptorHandshake(None, ALL_ROLES)
    reply, failure, _ = a.receive(wire(hello(nonce=nonce)))
    assert isinstance(reply, Rejected) and failure and not a.done
    c = ConnectorHandshake(ROLE_CLIENT, None)
    c.start()
    connector_fails(c, Welcome(PROTOCOL_VERSION, False, nonce, b""), "malformed")


# --- unexpected messages ------------------------------------------------------------------------

@pytest.mark.parametrize("first", [Heartbeat(1.0), TaskSubmit(b"t", 0, b"f", b"c", "", 0), Proof(b""), Accepted(),
                                   Welcome(PROTOCOL_VERSION, False, b"a" * NONCE_BYTES, b"")])
def test_acceptor_fails_on_non_handshake_message_first(first):
    a = AcceptorHandshake(None, ALL_ROLES)
    reply, failure, _ = a.receive(wire(first))
    assert failure is not None and type(first).__name__ in failure
    assert reply is None or isinstance(reply, Rejected)
    assert not a.done


@pytest.mark.parametrize("second", [Heartbeat(1.0), hello(), TaskSubmit(b"t", 0, b"f", b"c", "", 0)])
def test_acceptor_fails_on_unexpected_message_after_hello(second):
    a = AcceptorHandshake(None, ALL_ROLES)
    a.receive(wire(hello()))
    reply, failure, _ = a.receive(wire(second))
    assert failure is not None and not a.done


def test_acceptor_fails_on_second_proof():
    a = AcceptorHandshake(None, ALL_ROLES)
    a.receive(wire(hello()))
    reply, failure, _ = a.receive(wire(Proof(b"")))
    assert isinstance(reply, Accepted) and failure is None and a.done
    reply, failure, _ = a.receive(wire(Proof(b"")))
    assert failure is not None


def test_acceptor_reports_rejected_from_peer():
    a = AcceptorHandshake(None, ALL_ROLES)
    a.receive(wire(hello()))
    reply, failure, _ = a.receive(wire(Rejected("go away")))
    assert reply is None and failure is not None and "go away" in failure


@pytest.mark.parametrize("msg", [Heartbeat(1.0), Accepted(), hello(), Proof(b"")])
def test_connector_fails_on_unexpected_message_before_welcome(msg):
    c = ConnectorHandshake(ROLE_CLIENT, None)
    c.start()
    connector_fails(c, msg, type(msg).__name__)


def test_connector_fails_on_second_welcome_and_on_message_instead_of_accepted():
    for late in (Welcome(PROTOCOL_VERSION, False, b"a" * NONCE_BYTES, b""), Heartbeat(1.0)):
        c = ConnectorHandshake(ROLE_CLIENT, None)
        c.start()
        step = c.receive(wire(Welcome(PROTOCOL_VERSION, False, b"a" * NONCE_BYTES, b"")))
        assert isinstance(step.reply, Proof) and step.failure is None and not step.done
        connector_fails(c, late, type(late).__name__)


def test_connector_reports_rejection_reason():
    c = ConnectorHandshake(ROLE_CLIENT, None)
    c.start()
    connector_fails(c, Rejected("server is full"), "server is full")


def test_handshake_frames_fit_the_handshake_limit():
    c, a = ConnectorHandshake(ROLE_CLIENT, b"k"), AcceptorHandshake(b"k", ALL_ROLES)
    frames = [c.start()]
    welcome, _, _ = a.receive(frames[0])
    frames.append(welcome)
    frames.append(c.receive(welcome).reply)
    frames.append(a.receive(frames[-1])[0])
    assert [type(f) for f in frames] == [Hello, Welcome, Proof, Accepted]
    assert all(len(encode(f)) - 8 <= HANDSHAKE_FRAME_LIMIT for f in frames)


# --- normalize_key ------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (None, None),
    ("", None),
    (b"", None),
    (bytearray(), None),
    ("key", b"key"),
    ("s\u00e9cr\u00e8t \U0001F511", "s\u00e9cr\u00e8t \U0001F511".encode("utf-8")),
    (b"\x00\xffkey", b"\x00\xffkey"),
    (bytearray(b"key"), b"key"),
])
def test_normalize_key(value, expected):
    got = normalize_key(value)
    assert got == expected
    if expected is not None:
        assert type(got) is bytes


@pytest.mark.parametrize("value", [123, 1.5, ["key"], object()])
def test_normalize_key_rejects_other_types(value):
    with pytest.raises(TypeError):
        normalize_key(value)
