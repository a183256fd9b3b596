"""Connection handshake as two small sans-I/O state machines.

Connector                                  Acceptor
  Hello(magic, version, role, nonce_c)  ->
                                        <-  Welcome(version, auth_required, nonce_a, proof_a)
  Proof(proof_c)                        ->
                                        <-  Accepted | Rejected(reason)

With a shared key, ``proof_a = HMAC(key, "acceptor" + nonce_c + nonce_a)`` and
``proof_c = HMAC(key, "connector" + nonce_a + nonce_c)``: each side proves it knows the
key to the other, and neither proof can be replayed on another connection. A side with
a key refuses a peer without one, so a key cannot be silently dropped. Until the acceptor
has sent Accepted it decodes nothing but these frames, and they are size-capped.

Both roles answer every frame with a :class:`Step`, so a connection drives either the same way.
"""

import os
from typing import NamedTuple, Optional, Tuple

from .codec import Message
from .messages import (MAGIC, PROTOCOL_VERSION, ROLE_NAMES, Accepted, Hello, Proof, Rejected, Welcome)

HANDSHAKE_FRAME_LIMIT = 4096
NONCE_BYTES = 32


class HandshakeError(Exception):
    """The peer could not be authenticated or speaks another protocol; the reason is user-facing."""


class Step(NamedTuple):
    """What one handshake frame leads to: a frame to send (a Rejected on failure, unless the
    peer must get no answer), why the handshake failed, whether it is complete."""

    reply: Optional[Message]
    failure: Optional[str]
    done: bool


def _mac(key: bytes, label: bytes, *parts: bytes) -> bytes:
    import hashlib  # only with a key: hashlib loads OpenSSL, a few ms that keyless processes skip
    import hmac
    return hmac.new(key, label + b"".join(parts), hashlib.sha256).digest()


def _same_mac(expected: bytes, given: bytes) -> bool:
    import hmac
    return hmac.compare_digest(expected, given)


def normalize_key(auth_key: Optional[object]) -> Optional[bytes]:
    """Accept str or bytes; empty means no key."""
    if auth_key is None or auth_key == b"" or auth_key == "":
        return None
    if isinstance(auth_key, str):
        return auth_key.encode("utf-8")
    if isinstance(auth_key, (bytes, bytearray)):
        return bytes(auth_key)
    raise TypeError("auth_key must be str or bytes, not %s" % type(auth_key).__name__)


class ConnectorHandshake:
    """The side that dialled. ``start()`` gives the first frame; feed each reply to ``receive``."""

    def __init__(self, role: int, auth_key: Optional[bytes]) -> None:
        self.role = role
        self.key = auth_key
        self.nonce = os.urandom(NONCE_BYTES)
        self.peer_nonce = b""
        self.done = False

    def start(self) -> Message:
        return Hello(MAGIC, PROTOCOL_VERSION, self.role, self.nonce)

    def receive(self, msg: Message) -> Step:
        """The Step ``msg`` leads to; on failure the reason goes back to the server as a Rejected."""
        try:
            reply = self._receive(msg)
        except HandshakeError as exc:
            reason = str(exc)
            return Step(None if isinstance(msg, Rejected) else Rejected(reason), reason, False)
        return Step(reply, None, self.done)

    def _receive(self, msg: Message) -> Optional[Message]:
        if isinstance(msg, Rejected):
            raise HandshakeError("connection refused by the server: %s" % msg.reason)
        if isinstance(msg, Welcome) and not self.peer_nonce:
            if msg.version != PROTOCOL_VERSION:
                raise HandshakeError("protocol version mismatch: server speaks %d, this side %d"
                                     % (msg.version, PROTOCOL_VERSION))
            if len(msg.nonce) != NONCE_BYTES:
                raise HandshakeError("malformed handshake from server")
            self.peer_nonce = msg.nonce
            if msg.auth_required and self.key is None:
                raise HandshakeError("the server requires an auth key and none is configured "
                                     "(pass auth_key=..., --auth-key or set SCALER_AUTH_KEY)")
            if not msg.auth_required and self.key is not None:
                raise HandshakeError("an auth key is configured but the server does not use one; "
                                     "refusing an unauthenticated server")
            if self.key is None:
                return Proof(b"")
            expected = _mac(self.key, b"acceptor", self.nonce, msg.nonce)
            if not _same_mac(expected, msg.proof):
                raise HandshakeError("authentication failed: the server's proof does not match this auth key "
                                     "(the two sides have different keys)")
            return Proof(_mac(self.key, b"connector", msg.nonce, self.nonce))
        if isinstance(msg, Accepted) and self.peer_nonce:
            self.done = True
            return None
        raise HandshakeError("unexpected %s during handshake" % type(msg).__name__)


class AcceptorHandshake:
    """The listening side. It speaks second: ``start()`` gives nothing; feed frames to ``receive``."""

    def __init__(self, auth_key: Optional[bytes], allowed_roles: Tuple[int, ...]) -> None:
        self.key = auth_key
        self.allowed_roles = allowed_roles
        self.nonce = os.urandom(NONCE_BYTES)
        self.peer_nonce = b""
        self.role = 0  # the peer's, once its Hello is accepted
        self.done = False

    def start(self) -> Optional[Message]:
        return None

    def receive(self, msg: Message) -> Step:
        """The Step ``msg`` leads to; a failure's reply is the Rejected to send before closing."""
        if isinstance(msg, Rejected):
            return Step(None, "the peer refused the handshake: %s" % msg.reason, False)
        if isinstance(msg, Hello) and not self.peer_nonce:
            if msg.magic != MAGIC:
                return Step(None, "not a scaler peer (bad magic)", False)
            if msg.version != PROTOCOL_VERSION:
                return _refuse("protocol version mismatch: peer speaks %d, server %d"
                               % (msg.version, PROTOCOL_VERSION))
            if msg.role not in self.allowed_roles:
                return _refuse("role %s is not served on this address" % ROLE_NAMES.get(msg.role, msg.role))
            if len(msg.nonce) != NONCE_BYTES:
                return _refuse("malformed handshake")
            self.peer_nonce = msg.nonce
            self.role = msg.role
            proof = _mac(self.key, b"acceptor", msg.nonce, self.nonce) if self.key is not None else b""
            return Step(Welcome(PROTOCOL_VERSION, self.key is not None, self.nonce, proof), None, False)
        if isinstance(msg, Proof) and self.peer_nonce and not self.done:
            if self.key is not None:
                expected = _mac(self.key, b"connector", self.nonce, self.peer_nonce)
                if not _same_mac(expected, msg.proof):
                    return _refuse("authentication failed: wrong auth key")
            self.done = True
            return Step(Accepted(), None, True)
        return Step(Rejected("unexpected message during handshake"),
                    "unexpected %s during handshake" % type(msg).__name__, False)


def _refuse(reason: str) -> Step:
    return Step(Rejected(reason), reason, False)
