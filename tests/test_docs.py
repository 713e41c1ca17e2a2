"""Settings and flags are documented where users look for them."""

from __future__ import annotations

from pathlib import Path

from kgweave.cli.main import cli
from kgweave.settings import Settings
from kgweave.training.config import TrainConfig

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_training_setting_is_documented_and_a_flag() -> None:
    text = (DOCS / "training.md").read_text()
    train_flags = {opt for p in cli.commands["train"].params for opt in p.opts}
    for name in TrainConfig.model_fields:
        assert f"| `{name}` |" in text, f"{name} missing from docs/training.md"
        flag = "--time-budget" if name == "time_budget_s" else f"--{name.replace('_', '-')}"
        assert flag in train_flags, f"{flag} missing from kgweave train"


def test_every_environment_setting_has_a_description() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"KGWEAVE_{name.upper()} has no description"


def test_cli_reference_is_current() -> None:
    from kgweave.cli.reference import render

    committed = (DOCS / "cli.md").read_text()
    assert committed == render(), "regenerate: python -m kgweave.cli.reference > docs/cli.md"


def test_settings_reference_is_current() -> None:
    from kgweave.cli.reference import render_settings

    committed = (DOCS / "settings.md").read_text()
    expected = "regenerate: python -m kgweave.cli.reference --settings > docs/settings.md"
    assert committed == render_settings(), expected
