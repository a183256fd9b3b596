"""The wire protocol: codec, message declarations, handshake. Pure code, no I/O."""
from .codec import ProtocolError, decode, encode, encode_parts
from .handshake import HandshakeError

__all__ = ["ProtocolError", "HandshakeError", "decode", "encode", "encode_parts"]
