"""``LoggingConfig``: upstream's logging settings, a face over ``components.LoggingSettings``."""

import dataclasses
from typing import Any, Dict, Optional, Tuple

from ..components import LoggingSettings
from ..faces import check_values, default_of

_NAMES = {"logging_paths": "paths", "logging_config_file": "config_file", "logging_level": "level"}


@dataclasses.dataclass
class LoggingConfig:
    paths: Tuple[str, ...] = default_of(LoggingSettings, "logging_paths")
    config_file: Optional[str] = None
    level: str = default_of(LoggingSettings, "logging_level")

    def __post_init__(self) -> None:
        checked = check_values(LoggingSettings, self.scaler_fields(), "LoggingConfig", _NAMES)
        self.paths, self.config_file, self.level = (
            checked["logging_paths"], checked["logging_config_file"], checked["logging_level"])

    def scaler_fields(self) -> Dict[str, Any]:
        """These settings under scaler's field names (``logging_paths``...)."""
        return {"logging_paths": self.paths, "logging_config_file": self.config_file, "logging_level": self.level}
