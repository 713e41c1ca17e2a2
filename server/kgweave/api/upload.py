"""A model folder received as a stream of file chunks (``AdminService.RegisterModel``).

Paths are checked before anything is written: relative, inside the folder, no ``..``, no
hidden or special names. The staging folder lives under the server's jobs folder and is
removed whatever happens; :meth:`ModelUpload.finish` hands the complete folder to the
registry, which verifies the artifact before it becomes a version.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import BinaryIO

from kgweave.errors import InvalidArgumentError, ResourceExhaustedError, echo

#: what one upload may hold: a model folder with its language side fits well inside
MAX_UPLOAD_BYTES = 8 << 30
MAX_FILES = 1000


def _checked(path: str) -> PurePosixPath:
    parts = PurePosixPath(path).parts
    if (
        not path
        or not parts  # ("./": the folder itself)
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
        or any(len(p.encode()) > 255 for p in parts)  # (longer than a file system name)
    ):
        raise InvalidArgumentError(f"RegisterModel: bad file path {echo(path)} in the model folder")
    return PurePosixPath(*parts)


class ModelUpload:
    """Files of one model folder written under a fresh staging folder."""

    def __init__(self, staging_root: Path) -> None:
        staging_root.mkdir(parents=True, exist_ok=True)
        self._root = Path(tempfile.mkdtemp(prefix="upload-", dir=staging_root))
        self.folder = self._root / "model"
        self.folder.mkdir()
        self._path: PurePosixPath | None = None
        self._handle: BinaryIO | None = None
        self._seen: set[PurePosixPath] = set()
        self._bytes = 0

    @property
    def empty(self) -> bool:
        """Nothing has been received yet."""
        return self._path is None

    def write(self, path: str, data: bytes) -> None:
        """Append ``data`` to the file ``path`` (a new path starts a new file)."""
        name = _checked(path)
        if name != self._path:
            if name in self._seen:
                raise InvalidArgumentError(f"RegisterModel: file {echo(path)} was sent twice")
            if len(self._seen) >= MAX_FILES:
                raise ResourceExhaustedError(f"RegisterModel: over {MAX_FILES} files")
            self._close_file()
            target = self.folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            self._handle = target.open("xb")
            self._path = name
            self._seen.add(name)
        self._bytes += len(data)
        if self._bytes > MAX_UPLOAD_BYTES:
            raise ResourceExhaustedError(
                f"RegisterModel: the model folder is over {MAX_UPLOAD_BYTES >> 30} GiB"
            )
        assert self._handle is not None
        self._handle.write(data)

    def finish(self) -> Path:
        """The complete folder; InvalidArgumentError when nothing was sent."""
        self._close_file()
        if not self._seen:
            raise InvalidArgumentError("RegisterModel: no files were sent")
        return self.folder

    def _close_file(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> ModelUpload:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close_file()
        shutil.rmtree(self._root, ignore_errors=True)
