"""Parsing of dataset files: triples and text side files.

Files are UTF-8, tab-separated, with LF or CRLF line endings; a UTF-8 byte order mark at the
start of a file is dropped. Ids stay strings (WN18RR's synset offsets keep their leading zeros).
A malformed line is refused with the file, the line number and what is wrong; nothing is silently
skipped except blank lines. What a graph database cannot store is refused here, before anything
is written: a NUL byte anywhere, and control characters (other than tab) in ids.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from kgweave.errors import DatasetError, echo

LabeledTriple = tuple[str, str, str]

_BOM = "\ufeff"
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its line ending), skipping blank lines."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not valid UTF-8 ({exc.reason})") from exc
            if number == 1:
                line = line.removeprefix(_BOM)
            if "\x00" in line:
                raise DatasetError(
                    f"{path}:{number}: contains a NUL byte (column {line.index(chr(0)) + 1}), "
                    "which a graph database cannot store"
                )
            if line.strip():
                yield number, line


def _check_id(path: Path, number: int, what: str, value: str) -> None:
    bad = _CONTROL.search(value)
    if bad:
        raise DatasetError(
            f"{path}:{number}: {what} {echo(value)} contains the control character "
            f"U+{ord(bad.group()):04X}, which ids cannot hold"
        )


def read_triples(path: Path) -> list[LabeledTriple]:
    """Read ``head<TAB>relation<TAB>tail`` lines.

    Raises:
        DatasetError: naming ``path:line`` for a line without exactly three non-empty fields.
    """
    triples: list[LabeledTriple] = []
    for number, line in _lines(path):
        fields = line.split("\t")
        if len(fields) != 3:
            raise DatasetError(
                f"{path}:{number}: expected 3 tab-separated fields (head, relation, tail), "
                f"found {len(fields)}: {echo(line)}"
            )
        head, relation, tail = fields
        if not head or not relation or not tail:
            which = [n for n, v in zip(("head", "relation", "tail"), fields, strict=True) if not v]
            raise DatasetError(f"{path}:{number}: empty {', '.join(which)} field")
        for what, value in zip(("head", "relation", "tail"), fields, strict=True):
            _check_id(path, number, what, value)
        triples.append((head, relation, tail))
    return triples


def read_text_map(path: Path) -> dict[str, str]:
    """Read ``key<TAB>text`` lines (``entity2text.tsv``, ``relation2text.tsv``, ...).

    The text is everything after the first tab. A key seen twice keeps its first text.
    """
    mapping: dict[str, str] = {}
    for number, line in _lines(path):
        key, sep, text = line.partition("\t")
        if not sep or not key:
            raise DatasetError(f"{path}:{number}: expected 'key<TAB>text', found {echo(line)}")
        _check_id(path, number, "key", key)
        mapping.setdefault(key, text.strip())
    return mapping


def read_wikidata_descriptions(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Read FB15k-237's ``entity2wikidata.json``: (labels, short descriptions) by entity id."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable JSON file: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object keyed by entity id")
    labels: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if isinstance(value.get("label"), str):
                labels[key] = value["label"]
            if isinstance(value.get("description"), str):
                descriptions[key] = value["description"]
    return labels, descriptions
