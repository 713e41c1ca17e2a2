"""Job worker processes (serving/workers.py) as the server runs them: spawned, fed through
their lifeline, and gone when it closes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from process_support import HANG_GUARD_S

#: runs a demo training in a warm worker (the updater's kind), then closes its lifeline, as a
#: stopping server does: the idle worker ends with os._exit
SCRIPT = """
import json, multiprocessing as mp, sys
from pathlib import Path
from kgweave.serving.workers import Worker
from kgweave.settings import Settings

if __name__ == "__main__":
    folder = Path(sys.argv[1])
    (folder / "job").mkdir(parents=True)
    settings = Settings(data_dir=folder / "data")
    worker = Worker(mp.get_context("spawn"), warm=True, name="kgweave-updater")
    spec = {"config": {"epochs": 1, "dim": 8}, "dataset": "demo"}
    worker.submit("job", spec, str(folder / "job" / "model"), settings.model_dump_json())
    while "state" not in (event := worker.events.recv()):
        pass
    worker.close()
    print(json.dumps({"state": event["state"], "exit": worker.process.exitcode}))
"""


def test_a_worker_that_exits_with_its_server_leaks_no_semaphore(tmp_path: Path) -> None:
    """Regression: at Ctrl-C of `kgweave serve` after a job, Python's resource tracker warned
    "There appear to be 1 leaked semaphore objects": the updater's progress bars held tqdm's
    process-shared lock, which a worker ending with os._exit never released."""
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        check=False,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"state": "succeeded", "exit": 75}
    assert "leaked semaphore" not in done.stderr, done.stderr
