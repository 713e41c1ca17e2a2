"""Files only this user may read: kgweave's data folder (0700) and its secrets (0600)."""

from __future__ import annotations

from pathlib import Path


def private_dir(path: Path) -> Path:
    """``path`` as a folder: created 0700 when missing (its missing parents too); an existing
    folder keeps its mode."""
    if not path.is_dir():
        for parent in reversed(path.parents):
            if not parent.exists():
                parent.mkdir(mode=0o700, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 whatever the umask, replacing it atomically;
    its folder is created 0700 when missing."""
    from kgweave import atomic

    private_dir(path.parent)
    atomic.write_text(path, text, file_mode=0o600)
