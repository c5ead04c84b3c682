"""Server configuration: the typed model of ``caxton.yaml`` and its loader."""

from caxton.config.loader import (
    LoadedConfig,
    Override,
    ServerAddress,
    known_key_paths,
    load_config,
    load_server_address,
)
from caxton.config.model import CaxtonConfig

__all__ = [
    "CaxtonConfig",
    "LoadedConfig",
    "Override",
    "ServerAddress",
    "known_key_paths",
    "load_config",
    "load_server_address",
]
