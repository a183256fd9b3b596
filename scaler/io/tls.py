"""TLS for ``tls://`` addresses, with the standard library's ``ssl`` module.

The side that binds a ``tls://`` address presents a certificate (``--tls-cert`` /
``--tls-key``); the side that connects verifies it, and that it names the host it dialled,
against the system's trusted certificates (which ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` can
point at a private CA) or, when given, only against ``--tls-ca`` / ``tls_ca=``. TLS 1.2 is
the oldest version either side accepts. The shared auth key handshake then runs inside the
TLS connection as it does on ``tcp://``: TLS authenticates the server and encrypts, the key
authenticates both sides.

``ssl`` is imported only when TLS is used: a process that never sees a ``tls://`` address
(a worker's processor, say) does not pay for it.

How a connection drives TLS over a non-blocking socket is in ``connection.py``.
"""

import os
import threading
from typing import Any, Dict, Optional, Tuple

# What a TLS listener answers, in a plain Rejected frame, to a peer that does not start with a
# TLS ClientHello (a scaler peer dialling tcp:// for instance), before closing.
REQUIRES_TLS = "this address requires TLS: connect with tls://HOST:PORT, not tcp://"
TLS_RECORD_HANDSHAKE = 0x16  # the first byte of a TLS ClientHello

_CA_HINT = ("give the CA certificate that signed the server's certificate as tls_ca= / --tls-ca, or point "
            "SSL_CERT_FILE at it")
_client_contexts: Dict[Tuple[Optional[str], Optional[str], Optional[str]], Any] = {}
_lock = threading.Lock()


def _ssl() -> Any:
    import ssl
    return ssl


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)


def server_context(cert: str, key: str) -> Any:
    """The ``ssl.SSLContext`` of a listener; ValueError (one line) if the files cannot be used."""
    ssl = _ssl()
    for what, path in (("certificate", cert), ("private key", key)):
        if not isinstance(path, str) or not path:
            raise ValueError("expected the path of a TLS %s, got %r" % (what, path))
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ValueError("cannot read TLS %s %r: %s" % (what, path, exc.strerror or exc)) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise ValueError("TLS private key %r does not match the certificate %r" % (key, cert)) from None
        raise ValueError("cannot load the TLS certificate %r and private key %r: %s (expected PEM files: the "
                         "certificate chain, then its unencrypted private key)" % (cert, key, _reason(exc))) from None
    except OSError as exc:
        raise ValueError("cannot load the TLS certificate %r and private key %r: %s" % (cert, key, _reason(exc))
                         ) from None
    return context


def client_context(ca: Optional[str] = None) -> Any:
    """The ``ssl.SSLContext`` of a connecting side: verify against ``ca`` if given, else the system
    store (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are read now). ValueError if ``ca`` cannot be used.

    Contexts are shared by every connection with the same settings (loading the system store
    costs milliseconds).
    """
    cache_key = (ca, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    with _lock:
        context = _client_contexts.get(cache_key)
        if context is not None:
            return context
    ssl = _ssl()
    if ca is not None:
        if not isinstance(ca, str) or not ca:
            raise ValueError("expected the path of a CA certificate file, got %r" % (ca,))
        try:
            context = ssl.create_default_context(cafile=ca)
        except ssl.SSLError as exc:
            raise ValueError("TLS CA file %r holds no usable certificate: %s (expected PEM certificates)"
                             % (ca, _reason(exc))) from None
        except OSError as exc:
            raise ValueError("cannot read TLS CA file %r: %s" % (ca, exc.strerror or exc)) from None
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with _lock:
        _client_contexts[cache_key] = context
    return context


def check_ca_file(ca: str) -> None:
    """ValueError (one line) if ``ca`` is not a usable CA file."""
    client_context(ca)


def handshake_failure(exc: BaseException, peer: str, server_side: bool) -> str:
    """What to tell the user about a TLS handshake that failed with ``exc``."""
    ssl = _ssl()
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = getattr(exc, "verify_message", "") or _reason(exc)
        if "hostname mismatch" in message.lower() or "ip address mismatch" in message.lower():
            return ("cannot verify the TLS certificate of %s: certificate verify failed: %s (connect with a host "
                    "name or address the certificate lists)" % (peer, message.rstrip(".")))
        return "cannot verify the TLS certificate of %s: certificate verify failed: %s; %s" % (
            peer, message.rstrip("."), _CA_HINT)
    eof = isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError)) or (
        isinstance(exc, ssl.SSLError) and "EOF" in str(exc))
    reason = _reason(exc)
    if server_side:  # logged as "refused PEER: ..."
        if eof:
            return "it closed the connection during the TLS handshake"
        if any(alert in reason for alert in ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_UNKNOWN")):
            return "TLS handshake failed: %s (it does not trust this server's certificate)" % reason
        return "TLS handshake failed: %s" % reason
    if eof:
        return ("%s closed the connection during the TLS handshake: is it a plain tcp:// address? (a tcp:// "
                "server does not speak TLS)" % peer)
    return "TLS handshake with %s failed: %s" % (peer, reason)


__all__ = ["REQUIRES_TLS", "server_context", "client_context", "check_ca_file", "handshake_failure"]
