"""benchmarks/tune_eval.py on a folder of triples in another layout (``.txt`` splits, as CoDEx
and LibKGE ship them): both figures, the published one beside them, and the search's first
trial equal to the no-flag run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tune_eval.py"


def test_tune_eval_prints_both_figures_for_a_folder_of_txt_splits(
    tmp_path: Path, datasets_dir: Path
) -> None:
    folder = tmp_path / "nations-txt"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        shutil.copy(datasets_dir / "nations" / f"{split}.tsv", folder / f"{split}.txt")
    record = tmp_path / "result.json"
    command = [sys.executable, str(SCRIPT), str(folder), "--trials", "1"]
    command += ["--work", str(tmp_path / "work"), "--json-out", str(record)]
    command += ["--published", "0.8", "--common=--epochs 2 --eval-every 1 --dim 8 --num-threads 1"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["valid", "MRR", "test", "MRR", "seconds", "vs", "published"]
    assert lines[1].startswith("no-flag train") and lines[1].endswith("%")
    assert lines[2].startswith("tune") and lines[3].startswith("published (tuned)")
    result = json.loads(record.read_text())
    assert result["dataset"] == "nations-txt" and result["trials"] == 1
    assert result["no_flags"]["recipe"] == "small-dense"
    assert result["statistics"]["relations"] == 55
    # one trial: the recipe, the same run as the no-flag training
    assert result["tuned"]["valid_mrr"] == result["no_flags"]["valid_mrr"]
    assert result["published_test_mrr"] == 0.8
    # linked, not copied
    assert (tmp_path / "work" / "dataset" / "nations-txt" / "train.tsv").is_symlink()


def test_tune_eval_refuses_a_folder_without_splits(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--trials", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"{tmp_path}: needs train, valid and test splits as .tsv or .txt files"
    )
