"""Configuration: storages from cloudmesh.yaml (cloudmesh-storage format) and the transfer defaults.

A storage lives at `cloudmesh.storage.<name>` with `cm.kind` (awss3, azureblob, local), a
`credentials` mapping and, for local, `default.directory`. Each provider checks its own fields.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cloudmesh.transfer.errors import ConfigError
from cloudmesh.transfer.location import Location

SECRET_WORDS = ("key", "secret", "password", "token", "connection_string", "sas", "url")
MASK = "********"


def config_dir() -> Path:
    """The cloudmesh config directory: $CLOUDMESH_CONFIG_DIR, else ~/.cloudmesh."""
    return Path(os.environ.get("CLOUDMESH_CONFIG_DIR") or "~/.cloudmesh").expanduser()


def is_secret(name: str) -> bool:
    name = name.lower()
    return any(word in name for word in SECRET_WORDS) and name != "endpoint_url"


def masked(value):
    """A copy of a config value with every secret-looking field replaced by a mask."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret(str(k)) and v not in (None, "") else masked(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def read_yaml(path: Path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} is a directory, not a file: {path}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{what} {path} is not valid YAML{where}") from None


@dataclass
class StorageConfig:
    """One configured storage: its name, kind and settings (credentials merged with defaults)."""

    name: str
    kind: str
    settings: dict = field(default_factory=dict)

    def require(self, key: str, env: str | None = None) -> str:
        """A required setting, falling back to an environment variable; a clear error if absent."""
        value = self.settings.get(key) or (os.environ.get(env) if env else None)
        if value in (None, ""):
            hint = f" (or set {env})" if env else ""
            raise ConfigError(f"storage '{self.name}' has no '{key}' in cloudmesh.yaml{hint}")
        return str(value)


def load_storages(path: Path | None = None) -> dict[str, StorageConfig]:
    """All storages of cloudmesh.yaml, by name."""
    path = path or config_dir() / "cloudmesh.yaml"
    data = read_yaml(path, "cloudmesh.yaml")
    top = data.get("cloudmesh") if isinstance(data, dict) else None
    section = top.get("storage") if isinstance(top, dict) else None
    if not isinstance(section, dict) or not section:
        raise ConfigError(f"{path} has no 'cloudmesh.storage' section")
    storages = {}
    for name, entry in section.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"storage '{name}' in cloudmesh.yaml is not a mapping")
        cm = entry.get("cm")
        kind = cm.get("kind") if isinstance(cm, dict) else None
        if not kind:
            raise ConfigError(f"storage '{name}' has no 'cm.kind' in cloudmesh.yaml")
        settings = {}
        for part in ("default", "credentials"):
            value = entry.get(part) or {}
            if not isinstance(value, dict):
                raise ConfigError(f"storage '{name}' has a '{part}' that is not a mapping in cloudmesh.yaml")
            settings.update(value)
        storages[str(name)] = StorageConfig(str(name), str(kind), settings)
    return storages


def storage_config(name: str, storages: dict[str, StorageConfig]) -> StorageConfig:
    if name not in storages:
        known = ", ".join(sorted(storages)) or "none"
        raise ConfigError(f"unknown storage '{name}' (configured: {known})")
    return storages[name]


DEFAULTS_FILE = "transfer.yaml"


def read_defaults(path: Path) -> dict:
    """Validate a transfer config file: a mapping with `source` and `target` (STORAGE:PATH)."""
    data = read_yaml(path, "transfer config file")
    if not isinstance(data, dict):
        raise ConfigError(f"transfer config file {path} must be a mapping with 'source' and 'target'")
    for key in ("source", "target"):
        if not data.get(key):
            raise ConfigError(f"transfer config file {path} has no '{key}: STORAGE:PATH'")
        Location.parse(str(data[key]))
    return data


def save_defaults(data: dict) -> Path:
    path = config_dir() / DEFAULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return path


def load_defaults() -> dict | None:
    path = config_dir() / DEFAULTS_FILE
    return read_defaults(path) if path.exists() else None
