"""The provider registry: `cm.kind` in cloudmesh.yaml names the class that serves a storage."""
import importlib

from cloudmesh.transfer.config import StorageConfig
from cloudmesh.transfer.errors import ConfigError
from cloudmesh.transfer.providers.base import (Folder, MiB, ObjectInfo, Part, Reader, Resumable, ServerCopy,
                                               SignedURLs, Storage, Upload)
from cloudmesh.transfer.retry import Retry

KINDS = {
    "local": "cloudmesh.transfer.providers.local:LocalStorage",
    "awss3": "cloudmesh.transfer.providers.awss3:S3Storage",
    "azureblob": "cloudmesh.transfer.providers.azureblob:AzureStorage",
    "memory": "cloudmesh.transfer.providers.memory:MemoryStorage",
}


def provider_class(kind: str) -> type[Storage]:
    """The class for a kind, imported on first use so that `cms` starts without every SDK."""
    if kind not in KINDS:
        raise ConfigError(f"unknown storage kind '{kind}' (known: {', '.join(sorted(KINDS))})")
    module, _, name = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def open_storage(config: StorageConfig, retry: Retry = Retry()) -> Storage:
    return provider_class(config.kind).from_config(config, retry)


__all__ = ["KINDS", "Folder", "MiB", "ObjectInfo", "Part", "Reader", "Resumable", "ServerCopy", "SignedURLs", "Storage",
           "Upload", "open_storage", "provider_class"]
