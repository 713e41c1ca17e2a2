"""The settings object: descriptions from attribute docstrings, data-folder paths, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgweave.errors import InvalidArgumentError
from kgweave.graph.neo4j_server import Neo4jServer
from kgweave.settings import Settings, get_settings


def test_descriptions_come_from_the_docstrings_below_the_fields() -> None:
    port = Settings.model_fields["grpc_port"]
    assert port.description == "gRPC port (0: pick a free one)."
    assert (port.default, Settings.model_fields["device"].default) == (50051, "auto")


def test_data_folder_paths_follow_the_data_folder_and_are_read_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.models_dir == tmp_path / "models"
    assert settings.tokens_file == tmp_path / "tokens.json"
    assert Settings.models_dir.__doc__, "a path attribute documents itself"
    server = Neo4jServer(tmp_path / "neo4j")
    assert server.state_file == tmp_path / "neo4j" / "neo4j.json"
    with pytest.raises(AttributeError):
        server.log_file = tmp_path


def test_a_bad_variable_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KGWEAVE_GRPC_PORT", "70000")
    with pytest.raises(InvalidArgumentError, match=r"^KGWEAVE_GRPC_PORT='70000': .*65535$"):
        get_settings()
