"""A read-only attribute naming a fixed path below a folder attribute of the same object.

``models_dir = SubPath("data_dir", "models", "The model registry.")`` reads as
``self.data_dir / "models"`` and documents itself, so that an object's well-known files and
folders are declared in one line each instead of one property each (the settings' data folder,
a Neo4j server's folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import overload


class SubPath:
    """``getattr(obj, folder) / name``, read whenever the attribute is read (so it follows the
    folder when that changes)."""

    def __init__(self, folder: str, name: str, doc: str) -> None:
        self.folder = folder
        self.name = name
        self.__doc__ = doc

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> SubPath: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Path: ...

    def __get__(self, obj: object, owner: type | None = None) -> SubPath | Path:
        if obj is None:
            return self
        folder: Path = getattr(obj, self.folder)
        return folder / self.name

    def __set__(self, obj: object, value: object) -> None:
        raise AttributeError(f"{self.folder}/{self.name} is read-only (derived from {self.folder})")
