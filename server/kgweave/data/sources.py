"""Finding a dataset by name or path.

Order of resolution for ``--dataset SPEC``:

1. ``demo``: the demo graph shipped inside the package;
2. an existing folder path;
3. ``SPEC/`` inside the ``KGWEAVE_DATASETS_DIR`` folder (case-insensitive);
4. a well-known dataset in the download cache, or downloaded into it when the machine is online,
   every file checked against its sha256.

A client of ``kgweave serve`` names a dataset for a training job; it does not get to point the
server at any folder: :func:`confine_dataset` accepts ``demo``, the name of a dataset in the
datasets folder or the cache (or a well-known one), and a path only inside one of those two
folders. Its errors name no server path.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kgweave import atomic
from kgweave.atomic import sha256_file
from kgweave.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    did_you_mean,
    echo,
)
from kgweave.settings import Settings


@dataclass(frozen=True)
class RemoteFile:
    """One file of a well-known dataset: where to fetch it, and its expected sha256."""

    name: str
    url: str
    sha256: str


_PYKEEN = "https://raw.githubusercontent.com/pykeen/pykeen/master/src/pykeen/datasets"
_KGBERT = "https://raw.githubusercontent.com/yao8839836/kg-bert/master/data"

#: Public download locations of well-known datasets. Checksums are those of the reference copies
#: described in docs/datasets.md; a download whose bytes differ is refused, never used.
WELL_KNOWN: dict[str, tuple[RemoteFile, ...]] = {
    "umls": (
        RemoteFile(
            "train.tsv",
            f"{_PYKEEN}/umls/train.txt",
            "873ef4925516b83e7f6f8cc02b4be51d848828710a7f65a956f0ac4a9e452f35",
        ),
        RemoteFile(
            "valid.tsv",
            f"{_PYKEEN}/umls/valid.txt",
            "025c98f8a4891e2a6582ec5b40ee0d904031edad9c52554522f4b7904820c98e",
        ),
        RemoteFile(
            "test.tsv",
            f"{_PYKEEN}/umls/test.txt",
            "a7eb529a3d2810fcc96341ccc97c625a5e202f8389673aa6bd317eeebbb79014",
        ),
    ),
    "kinships": (
        RemoteFile(
            "train.tsv",
            f"{_PYKEEN}/kinships/train.txt",
            "738612111a6acf0e39662bde24c7e72a4d1edf20931beea077da367dda689731",
        ),
        RemoteFile(
            "valid.tsv",
            f"{_PYKEEN}/kinships/valid.txt",
            "c56f8630a583178b1e569f11a64aa535ae1ce0b0912d8b1e24716be2b37f04da",
        ),
        RemoteFile(
            "test.tsv",
            f"{_PYKEEN}/kinships/test.txt",
            "05e5733265761d55be9c05bfaff5a8d0808df46f9c1e9d66cc3f2fe114e43d88",
        ),
    ),
    "nations": (
        RemoteFile(
            "train.tsv",
            f"{_PYKEEN}/nations/train.txt",
            "0830fa9da8e5bba2ccdaa45b7bdc9130451ba66b09ff2708f35fccaf82473e57",
        ),
        RemoteFile(
            "valid.tsv",
            f"{_PYKEEN}/nations/valid.txt",
            "2b337a62e51a2f45c283eac98a70d21b7e0e102136be1539b2a52c652a7b0530",
        ),
        RemoteFile(
            "test.tsv",
            f"{_PYKEEN}/nations/test.txt",
            "3971085165b47b6aeaec68058c6d8d98b3005e929db81268410b95ae4db770ab",
        ),
    ),
    "fb15k-237": (
        RemoteFile(
            "train.tsv",
            f"{_KGBERT}/FB15k-237/train.tsv",
            "6e4c2782169af21e9743f3b1d200886f5d595bf6bc504ec1351720949c5cdfae",
        ),
        RemoteFile(
            "valid.tsv",
            f"{_KGBERT}/FB15k-237/dev.tsv",
            "cf6309010852f6a8d47a45df830a426415d1ee6f7a3970a8376ff1fb81db4a5c",
        ),
        RemoteFile(
            "test.tsv",
            f"{_KGBERT}/FB15k-237/test.tsv",
            "5711cf41623ceb4eacc50eb6108a3ca6565c7492e3caaf82a3e355cc660d1574",
        ),
        RemoteFile(
            "entity2text.tsv",
            f"{_KGBERT}/FB15k-237/entity2text.txt",
            "16beedcfad3d32696e8b0b98cfa0f5eeb144f5142225f227a64fd9ce37447da5",
        ),
        RemoteFile(
            "relation2text.tsv",
            f"{_KGBERT}/FB15k-237/relation2text.txt",
            "4bf7cb6ea0ac09b17ad210889f723be5e079669f6ae5d507787e1320bbaa0f72",
        ),
    ),
    "wn18rr": (
        RemoteFile(
            "train.tsv",
            f"{_KGBERT}/WN18RR/train.tsv",
            "038612e783c215ee5f3ca9fbfca27b8d0739be1028fe4ee7c174aecf0b83d5df",
        ),
        RemoteFile(
            "valid.tsv",
            f"{_KGBERT}/WN18RR/dev.tsv",
            "453ce7202afa58094a04d2b1560ee2b02660f1c260b32ce6651c8ccedd1028ab",
        ),
        RemoteFile(
            "test.tsv",
            f"{_KGBERT}/WN18RR/test.tsv",
            "0383bceaaa1096cf3c03ec021ed0048068e2355dbfc0239b292cefdac821cec5",
        ),
        RemoteFile(
            "entity2text.tsv",
            f"{_KGBERT}/WN18RR/entity2text.txt",
            "8f5c6f11753dafa879917b9bdf73d398ceb3bd4bed8d5553177e1e0f2c37521f",
        ),
        RemoteFile(
            "relation2text.tsv",
            f"{_KGBERT}/WN18RR/relation2text.txt",
            "91b1de5585d686ed31498d50f1c4eed44ba9486dffbbcc0c28927ac884184918",
        ),
    ),
}


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset found locally: its name, folder and where it came from."""

    name: str
    path: Path
    source: str  # "package", "datasets_dir", "cache"


def demo_path() -> Path:
    """Folder of the demo graph shipped in the package."""
    return Path(str(resources.files("kgweave") / "demo"))


def _is_dataset_dir(path: Path) -> bool:
    try:
        return all((path / f"{s}.tsv").is_file() for s in ("train", "valid", "test"))
    except (OSError, ValueError):  # a name too long for the file system, a NUL
        return False


def _find_in(folder: Path | None, name: str) -> Path | None:
    if folder is None or not folder.is_dir():
        return None
    direct = folder / name
    if _is_dataset_dir(direct):
        return direct
    for child in folder.iterdir():
        if child.name.lower() == name.lower() and _is_dataset_dir(child):
            return child
    return None


def list_datasets(settings: Settings) -> list[DatasetInfo]:
    """Every dataset available without a download, demo first."""
    found = [DatasetInfo("demo", demo_path(), "package")]
    for source, folder in (("datasets_dir", settings.datasets_dir), ("cache", settings.cache_dir)):
        if folder is not None and folder.is_dir():
            for child in sorted(folder.iterdir()):
                if _is_dataset_dir(child) and all(child.name != d.name for d in found):
                    found.append(DatasetInfo(child.name, child, source))
    return found


def resolve_dataset(spec: str, settings: Settings) -> Path:
    """The folder of the dataset named or pointed to by ``spec`` (see module docstring)."""
    if spec == "demo":
        return demo_path()
    as_path = Path(spec).expanduser()
    if as_path.is_dir():
        return as_path
    if any(sep in spec for sep in ("/", "\\")):
        raise NotFoundError(f"dataset folder {spec} does not exist")
    local = _find_in(settings.datasets_dir, spec) or _find_in(settings.cache_dir, spec)
    if local is not None:
        return local
    key = spec.lower()
    if key in WELL_KNOWN:
        return _download(key, settings)
    names = [d.name for d in list_datasets(settings)] + sorted(WELL_KNOWN)
    where = (
        f"KGWEAVE_DATASETS_DIR={settings.datasets_dir}"
        if settings.datasets_dir
        else "KGWEAVE_DATASETS_DIR is not set"
    )
    raise NotFoundError(f"no dataset {echo(spec)} ({where}){did_you_mean(spec, names)}")


def confine_dataset(spec: str, settings: Settings) -> str:
    """The dataset a server-side job may read for ``spec`` from a client: ``""`` (the graph)
    and ``demo`` as they are; the folder of a dataset name found in the datasets folder or the
    cache (a well-known name not there yet: the name, downloaded when the job runs); the
    resolved folder of a path inside one of those two folders (a relative path is taken
    inside the datasets folder). Anything else is refused, with a message that names no
    server path."""
    if spec in ("", "demo"):
        return spec
    if "\x00" in spec:
        raise InvalidArgumentError("dataset: a name holds no NUL character")
    if not any(sep in spec for sep in ("/", "\\")) and spec not in (".", "..") and spec[0] != "~":
        local = _find_in(settings.datasets_dir, spec) or _find_in(settings.cache_dir, spec)
        if local is not None:
            return str(local)
        if spec.lower() in WELL_KNOWN:
            return spec.lower()
        names = [d.name for d in list_datasets(settings)] + sorted(WELL_KNOWN)
        raise NotFoundError(f"no dataset {echo(spec)} on the server{did_you_mean(spec, names)}")
    roots = [
        Path(os.path.normpath(r.expanduser().absolute()))
        for r in (settings.datasets_dir, settings.cache_dir)
        if r is not None
    ]
    given = Path(spec)
    if given.is_absolute() or spec[0] == "~" or settings.datasets_dir is None:
        candidate = given
    else:
        candidate = settings.datasets_dir / given
    # lexically (".." folded, symlinks kept): a link the operator put in the folder is theirs
    folder = Path(os.path.normpath(candidate.expanduser()))
    if not any(folder.is_relative_to(root) for root in roots):
        raise InvalidArgumentError(
            f"dataset {echo(spec)}: a training job on the server reads a dataset by name "
            "(kgweave datasets lists them) or a folder inside the server's datasets folder; "
            "other server paths are refused"
        )
    if not _is_dataset_dir(folder):
        raise NotFoundError(
            f"dataset {echo(spec)}: no dataset folder (train.tsv, valid.tsv, test.tsv) there"
        )
    return str(folder)


def _offline_advice(name: str) -> str:
    return (
        f"set KGWEAVE_DATASETS_DIR to a folder holding {name}/ (train.tsv, valid.tsv, test.tsv) "
        f"or pass --dataset /path/to/{name}"
    )


def _download(name: str, settings: Settings) -> Path:
    """Fetch a well-known dataset into the cache, checking every file's sha256."""
    target = settings.cache_dir / name
    if settings.offline:
        raise FailedPreconditionError(
            f"dataset {echo(name)} is not available locally and KGWEAVE_OFFLINE is set: "
            + _offline_advice(name)
        )
    partial = settings.cache_dir / f".{name}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    for remote in WELL_KNOWN[name]:
        destination = partial / remote.name
        if destination.is_file() and sha256_file(destination) == remote.sha256:
            continue
        try:
            with urllib.request.urlopen(remote.url, timeout=settings.download_timeout_s) as resp:
                payload = resp.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise FailedPreconditionError(
                f"dataset {echo(name)} is not available locally and could not be downloaded "
                f"({remote.url}: {getattr(exc, 'reason', exc)}): " + _offline_advice(name)
            ) from exc
        digest = hashlib.sha256(payload).hexdigest()
        if digest != remote.sha256:
            raise FailedPreconditionError(
                f"download of {remote.url} has sha256 {digest}, expected {remote.sha256}; "
                "refusing it: " + _offline_advice(name)
            )
        atomic.write_bytes(destination, payload)
    atomic.move_in(partial, target)
    return target
