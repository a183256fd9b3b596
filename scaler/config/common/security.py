"""``SecurityConfig``: upstream's TLS settings, a face over ``components.TLSSettings``.

``tls_cert`` and ``tls_key`` (both or neither) are the certificate a side that binds
``tls://`` addresses presents; ``tls_ca`` (scaler's addition) is the CA file a side that
connects verifies servers against, instead of the system's trusted certificates. Where one
object is given to both sides (``SchedulerClusterCombo(security_config=...)`` and
``Client(address, security_config=...)``) each takes what it needs: a client presents no
certificate. The shared auth key is separate (``auth_key`` / ``auth_key_file``).
"""

import dataclasses
from typing import Any, Dict, Optional

from ..components import TLSSettings
from ..faces import check_values


@dataclasses.dataclass
class SecurityConfig:
    """Upstream's TLS settings: certificate and key to present, CA to trust."""

    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_ca: Optional[str] = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be provided together")
        check_values(TLSSettings, self.scaler_fields(), "SecurityConfig")
        if self.has_credentials():
            from ...io.tls import server_context
            try:
                server_context(self.tls_cert, self.tls_key)  # type: ignore[arg-type]
            except ValueError as exc:
                raise ValueError("SecurityConfig: %s" % exc) from None
        if self.tls_ca is not None:
            from ...io.tls import check_ca_file
            try:
                check_ca_file(self.tls_ca)
            except ValueError as exc:
                raise ValueError("SecurityConfig.tls_ca: %s" % exc) from None

    def has_credentials(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    def scaler_fields(self) -> Dict[str, Any]:
        return {"tls_cert": self.tls_cert, "tls_key": self.tls_key, "tls_ca": self.tls_ca}


def tls_settings(security_config: Any, tls_ca: Optional[str] = None) -> Dict[str, Optional[str]]:
    """``tls_cert``, ``tls_key`` and ``tls_ca`` of a ``SecurityConfig`` (or any object with such
    attributes, or None); an explicit ``tls_ca`` wins over the object's."""
    values = {name: getattr(security_config, name, None) for name in ("tls_cert", "tls_key", "tls_ca")}
    if tls_ca is not None:
        values["tls_ca"] = tls_ca
    return values
