"""Dataset parsing and resolution against real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgweave.data import list_datasets, load_dataset, resolve_dataset
from kgweave.data.reader import read_triples
from kgweave.errors import DatasetError, FailedPreconditionError, NotFoundError
from kgweave.settings import get_settings


def _write(folder: Path, name: str, text: str, newline: str = "\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def _tiny(folder: Path, newline: str = "\n") -> Path:
    _write(folder, "train.tsv", "a\tr\tb\nb\tr\tc\n00012\ts\ta\n", newline)
    _write(folder, "valid.tsv", "a\tr\tc\n", newline)
    _write(folder, "test.tsv", "c\ts\t00012\n", newline)
    return folder


def test_crlf_and_leading_zeros(tmp_path: Path) -> None:
    ds = load_dataset(_tiny(tmp_path / "crlf", newline="\r\n"))
    assert ds.entities.labels == ["00012", "a", "b", "c"]
    assert ds.relations.labels == ["r", "s"]
    assert ds.train.tolist() == [[1, 0, 2], [2, 0, 3], [0, 1, 1]]
    assert not any("\r" in e for e in ds.entities.labels + ds.relations.labels)
    # same content with LF: same ids, same triples
    lf = load_dataset(_tiny(tmp_path / "lf"))
    assert lf.train.tolist() == ds.train.tolist()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a\tr\tb\na\tr\n", r"train.tsv:2: expected 3 tab-separated fields .* found 2"),
        ("a\tr\tb\n\na\tr\tb\tx\n", r"train.tsv:3: expected 3 .* found 4"),
        ("a\t\tb\n", r"train.tsv:1: empty relation field"),
        ("a r b\n", r"train.tsv:1: expected 3 .* found 1"),
    ],
)
def test_malformed_line_refused_with_line_number(
    tmp_path: Path, content: str, message: str
) -> None:
    _tiny(tmp_path)
    _write(tmp_path, "train.tsv", content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path)


def test_invalid_utf8_refused(tmp_path: Path) -> None:
    _tiny(tmp_path)
    (tmp_path / "test.tsv").write_bytes(b"a\tr\tb\n\xff\xfe\tr\tb\n")
    with pytest.raises(DatasetError, match=r"test.tsv:2: not valid UTF-8"):
        load_dataset(tmp_path)


def test_missing_split_refused(tmp_path: Path) -> None:
    _tiny(tmp_path)
    (tmp_path / "valid.tsv").unlink()
    with pytest.raises(DatasetError, match=r"missing valid.tsv"):
        load_dataset(tmp_path)


def test_fb15k237_real_files(datasets_dir: Path) -> None:
    ds = load_dataset(datasets_dir / "fb15k-237")
    assert ds.num_entities == 14541
    assert ds.num_relations == 237
    assert [len(ds.split(s)) for s in ("train", "valid", "test")] == [272115, 17535, 20466]
    assert ds.entity_name("/m/016ywr") == "Jeremy Irons"
    assert "/m/016ywr" in ds.entity_descriptions  # from entity2wikidata.json
    assert ds.relation_texts["/music/artist/origin"] == "music artist origin"


def test_wn18rr_keeps_leading_zeros(datasets_dir: Path) -> None:
    triples = read_triples(datasets_dir / "wn18rr" / "test.tsv")
    assert len(triples) == 3134
    heads = {h for h, _, _ in triples}
    assert any(h.startswith("0") and len(h) == 8 for h in heads)
    ds = load_dataset(datasets_dir / "wn18rr")
    assert ds.num_entities == 40943
    assert ds.entity_name("00590383").startswith("chieftainship")


def test_demo_graph_ships_with_text_and_templates() -> None:
    ds = load_dataset(resolve_dataset("demo", get_settings()), name="demo")
    assert len(ds.train) >= 300
    assert set(ds.entity_names) >= set(ds.entities.labels)
    assert set(ds.entity_descriptions) >= set(ds.entities.labels)
    for relation in ds.relations.labels:
        template = ds.relation_templates[relation]
        assert "{head}" in template and "{tail}" in template


def test_resolution_by_name_path_and_errors(datasets_dir: Path, tmp_path: Path) -> None:
    settings = get_settings()
    assert resolve_dataset("UMLS", settings) == datasets_dir / "umls"
    assert resolve_dataset(str(datasets_dir / "nations"), settings) == datasets_dir / "nations"
    with pytest.raises(NotFoundError, match="did you mean 'umls'"):
        resolve_dataset("umsl", settings)
    with pytest.raises(NotFoundError, match="does not exist"):
        resolve_dataset(str(tmp_path / "nope"), settings)
    names = [d.name for d in list_datasets(settings)]
    assert names[0] == "demo"
    assert {"umls", "kinships", "nations", "fb15k-237", "wn18rr"} <= set(names)


def test_offline_well_known_dataset_explains_how_to_point_at_a_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KGWEAVE_DATASETS_DIR", str(tmp_path / "empty"))
    with pytest.raises(FailedPreconditionError, match=r"KGWEAVE_DATASETS_DIR .* fb15k-237/"):
        resolve_dataset("fb15k-237", get_settings())


@pytest.fixture
def file_server(tmp_path: Path):
    """A real HTTP server on a free loopback port serving ``tmp_path / 'www'``."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            """Keep the test output clean."""

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_well_known_dataset_downloads_with_checksums_into_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, datasets_dir: Path, file_server
) -> None:
    import shutil

    from kgweave.data import sources

    root, base = file_server
    for split in ("train", "valid", "test"):
        shutil.copy(datasets_dir / "nations" / f"{split}.tsv", root / f"{split}.txt")
    remote = tuple(
        sources.RemoteFile(f.name, f"{base}/{f.name.replace('.tsv', '.txt')}", f.sha256)
        for f in sources.WELL_KNOWN["nations"]
    )
    monkeypatch.setitem(sources.WELL_KNOWN, "nations", remote)
    monkeypatch.setenv("KGWEAVE_DATASETS_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("KGWEAVE_OFFLINE")
    path = resolve_dataset("nations", get_settings())
    assert path == get_settings().cache_dir / "nations"
    assert load_dataset(path).num_entities == 14
    # second time: from the cache, no server needed
    (root / "train.txt").unlink()
    assert resolve_dataset("nations", get_settings()) == path


def test_download_with_wrong_checksum_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, file_server
) -> None:
    from kgweave.data import sources

    root, base = file_server
    (root / "train.txt").write_text("tampered\tr\tx\n")
    remote = (sources.RemoteFile("train.tsv", f"{base}/train.txt", "0" * 64),)
    monkeypatch.setitem(sources.WELL_KNOWN, "umls", remote)
    monkeypatch.setenv("KGWEAVE_DATASETS_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("KGWEAVE_OFFLINE")
    with pytest.raises(FailedPreconditionError, match="refusing it"):
        resolve_dataset("umls", get_settings())
    assert not (get_settings().cache_dir / "umls").exists()


def test_well_known_checksums_match_the_reference_copies(datasets_dir: Path) -> None:
    import hashlib

    from kgweave.data.sources import WELL_KNOWN

    for name, files in WELL_KNOWN.items():
        for remote in files:
            local = datasets_dir / name / remote.name
            digest = hashlib.sha256(local.read_bytes()).hexdigest()
            assert digest == remote.sha256, f"{name}/{remote.name}"


def test_utf8_bom_is_dropped_from_the_first_id(tmp_path: Path) -> None:
    _tiny(tmp_path)
    _write(tmp_path, "train.tsv", "\ufeffa\tr\tb\nb\tr\tc\n00012\ts\ta\n")
    _write(tmp_path, "entity2text.tsv", "\ufeffa\tThe A\n")
    ds = load_dataset(tmp_path)
    assert ds.entities.labels == ["00012", "a", "b", "c"]
    assert ds.entity_names == {"a": "The A"}


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("train.tsv", "a\tr\tb\nb\tr\tc\x00d\n", r"train.tsv:2: contains a NUL byte \(column 6\)"),
        ("test.tsv", "a\tr\x00\tb\n", r"test.tsv:1: contains a NUL byte"),
        ("entity2text.tsv", "a\tThe\x00A\n", r"entity2text.tsv:1: contains a NUL byte"),
        ("train.tsv", "a\tr\tb\x07\n", r"train.tsv:1: tail 'b\\x07' contains .* U\+0007"),
        ("valid.tsv", "a\tr\x1b[31m\tc\n", r"valid.tsv:1: relation .* U\+001B"),
    ],
)
def test_what_a_database_cannot_store_is_refused(
    tmp_path: Path, file: str, content: str, message: str
) -> None:
    _tiny(tmp_path)
    _write(tmp_path, file, content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path)


def test_empty_valid_split_is_an_error_not_mrr_zero(tmp_path: Path) -> None:
    _tiny(tmp_path)
    _write(tmp_path, "valid.tsv", "")
    with pytest.raises(DatasetError, match=r"valid.tsv: no triples; validation .* needs some"):
        load_dataset(tmp_path)


def test_entities_only_in_valid_or_test_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _tiny(tmp_path)
    _write(tmp_path, "valid.tsv", "a\tr\tnew1\nnew2\tr\tnew1\n")
    _write(tmp_path, "test.tsv", "c\ts\tnew3\n")
    with caplog.at_level("WARNING", logger="kgweave.data.dataset"):
        ds = load_dataset(tmp_path)
    assert ds.num_entities == 7
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "valid.tsv: 2 entities appear only in valid" in warnings[0]
    assert "'new1', 'new2'" in warnings[0]
    assert "test.tsv: 1 entity appears only in test, not in train.tsv (e.g. 'new3')" in warnings[1]


def test_clean_dataset_gives_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="kgweave.data.dataset"):
        load_dataset(_tiny(tmp_path))
    assert caplog.records == []
