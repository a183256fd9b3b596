"""``SecurityConfig``: upstream's TLS certificate and key, a face over ``components.TLSSettings``.

This build has no TLS transport: a ``SecurityConfig`` that asks for TLS is refused when it
is built, with the same message as ``--tls-cert`` on the command line. Peers authenticate
with a shared secret instead (``auth_key`` / ``SCALER_AUTH_KEY``).
"""

import dataclasses
from typing import Any, Optional

from ..components import TLSSettings
from ..faces import check_values


@dataclasses.dataclass
class SecurityConfig:
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be provided together")
        check_values(TLSSettings, {"tls_cert": self.tls_cert, "tls_key": self.tls_key}, "SecurityConfig")
        if self.has_credentials():  # unreachable while TLSSettings refuses every value; kept as the contract
            raise ValueError("SecurityConfig: this build has no TLS transport")

    def has_credentials(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None


def refuse_tls(security_config: Any, where: str) -> None:
    """Raise ValueError if ``security_config`` (any object with ``tls_cert``/``tls_key``) asks for TLS."""
    if security_config is None:
        return
    if getattr(security_config, "tls_cert", None) is not None or getattr(security_config, "tls_key", None) is not None:
        raise ValueError("%s: security_config asks for TLS, but this build has no TLS transport; authenticate peers "
                         "with auth_key (or the SCALER_AUTH_KEY environment variable) instead" % where)
