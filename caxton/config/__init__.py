"""Server configuration: the typed model of ``caxton.yaml`` and its loader."""

from caxton.config.loader import LoadedConfig, Override, known_key_paths, load_config
from caxton.config.model import CaxtonConfig

__all__ = ["CaxtonConfig", "LoadedConfig", "Override", "known_key_paths", "load_config"]
