"""``kgweave neo4j`` without a running Neo4j: states and one-line errors (no JVM started)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kgweave.cli.main import main
from kgweave.graph.connect import neo4j_target
from kgweave.graph.neo4j_server import Neo4jServer
from kgweave.settings import get_settings


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_status_and_stop_when_nothing_runs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "neo4j", "status", "--json")
    assert code == 0 and json.loads(out)["running"] is False
    code, out, _ = _run(capsys, "neo4j", "stop")
    assert code == 0 and out.strip() == "Neo4j was not running"


def test_a_stale_state_file_is_not_a_running_dbms(capsys: pytest.CaptureFixture[str]) -> None:
    server = Neo4jServer(get_settings().data_dir / "neo4j")
    server.folder.mkdir(parents=True)
    state = {"pid": os.getpid(), "host": "127.0.0.1", "bolt_port": 1, "http_port": None}
    server.state_file.write_text(json.dumps({**state, "folder": str(server.folder)}))
    assert server.status() is None  # this pid is pytest, not the launcher
    assert not server.state_file.exists()


def test_start_without_java_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn
    code, out, err = _run(capsys, "neo4j", "start", "--bolt-port", "17999")
    assert code != 0 and out == ""
    assert err.startswith("error: java not found on PATH") or err.startswith(
        "error: mvn not found on PATH"
    )
    assert err.count("\n") == 1


def test_password_comes_from_the_data_folder_only_for_local_uris() -> None:
    settings = get_settings()
    assert neo4j_target("bolt://127.0.0.1:7687", settings).password is None  # no file yet
    password = Neo4jServer(settings.data_dir / "neo4j").password()
    assert (settings.data_dir / "neo4j" / "password").stat().st_mode & 0o777 == 0o600
    local = neo4j_target("bolt://localhost:7687", settings)
    assert (local.user, local.password) == ("neo4j", password)
    assert neo4j_target("bolt://db.example.com:7687", settings).password is None
    given = neo4j_target("bolt://me:secret@127.0.0.1:7687", settings)
    assert (given.user, given.password) == ("me", "secret")
    other_user = settings.model_copy(update={"graph_user": "alice"})
    assert neo4j_target("bolt://127.0.0.1:7687", other_user).password is None


def test_plugin_jars_of_a_maven_target(tmp_path: Path) -> None:
    from kgweave.graph.neo4j_server import plugin_jars

    names = ["kgweave-neo4j-plugin-0.1.jar", "original-kgweave-neo4j-plugin-0.1.jar",
             "x-sources.jar", "x-javadoc.jar", "x-tests.jar", "notes.txt"]  # fmt: skip
    for name in names:
        (tmp_path / name).write_text("")
    assert [p.name for p in plugin_jars(tmp_path)] == ["kgweave-neo4j-plugin-0.1.jar"]
    assert plugin_jars(tmp_path / "missing") == []
