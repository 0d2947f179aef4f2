"""Parsing of `STORAGE:PATH` locations and the safe joining of object keys."""
from dataclasses import dataclass

from cloudmesh.transfer.errors import UsageError


def normalize_path(path: str) -> str:
    """The canonical form of a path inside a storage: '/'-separated, no empty or '.' parts."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def join(*parts: str) -> str:
    """Join object-key parts with '/', ignoring empty parts."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def basename(key: str) -> str:
    return key.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Location:
    """A storage name and a path inside it; `folder` is True when the user wrote a trailing '/'."""

    storage: str
    path: str
    folder: bool = False

    @classmethod
    def parse(cls, text: str) -> "Location":
        if text is None or ":" not in text:
            raise UsageError(f"'{text}' is not STORAGE:PATH (for example awss3:data/ or local:out)")
        storage, _, path = text.partition(":")
        if not storage:
            raise UsageError(f"'{text}' names no storage before the ':'")
        if "\x00" in path:
            raise UsageError(f"the path in '{storage}:...' contains a NUL character")
        if any(p == ".." for p in path.replace("\\", "/").split("/")):
            raise UsageError(f"the path '{path}' must not contain '..'")
        normalized = normalize_path(path)
        return cls(storage, normalized, folder=path.endswith("/") or not normalized)

    def child(self, relative: str) -> "Location":
        return Location(self.storage, join(self.path, relative))

    def __str__(self) -> str:
        return f"{self.storage}:{self.path}"
