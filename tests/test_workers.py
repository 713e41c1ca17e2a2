"""Job worker processes (serving/workers.py) as the server runs them: spawned, fed through
their lifeline, and gone when it closes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    event = worker.events.recv()
    while "state" not in event:  # progress rows, then how the job ended
        event = worker.events.recv()
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


def _waits_for_ever(settings_json: str, marker: str) -> None:
    """In the diff worker: say it started, then block until killed (an export of a huge
    graph)."""
    import threading

    Path(marker).write_text(settings_json[:1])
    threading.Event().wait()


def test_closing_the_diff_worker_ends_an_export_under_way(tmp_path: Path) -> None:
    """Regression: SIGTERM to `kgweave serve` just after a restart on FB15k-237 took 15 s,
    the watcher waiting for the first snapshot diff's export to finish. Closing the worker
    ends the call at once (the export writes only its own next snapshot; nothing is
    committed)."""
    import threading
    from concurrent.futures.process import BrokenProcessPool

    from kgweave.changes.diff import DiffWorker
    from kgweave.settings import Settings
    from serving_support import wait_until

    worker = DiffWorker(Settings(data_dir=tmp_path / "data"))
    marker = tmp_path / "started"
    raised: list[BaseException] = []

    def call() -> None:
        try:
            worker._call(_waits_for_ever, str(marker))
        except BaseException as exc:  # (what the watcher's diff thread would see)
            raised.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    wait_until(marker.is_file, "the worker's call to start")
    worker.close()
    thread.join(timeout=HANG_GUARD_S)
    assert not thread.is_alive() and len(raised) == 1
    assert isinstance(raised[0], BrokenProcessPool), raised
    # closed for good: a diff step that had passed the stop check starts no worker
    with pytest.raises(BrokenProcessPool, match="closed"):
        worker._call(_waits_for_ever, str(marker))


#: the updater's warm-up, then an artifact loaded: how many modules the load imported
WARM = """
import sys
from pathlib import Path
from kgweave.serving.workers import WARM_IMPORTS, warm
from kgweave.artifact import load_artifact

warm(WARM_IMPORTS)
before = set(sys.modules)
load_artifact(Path(sys.argv[1]))
new = sorted(set(sys.modules) - before)
print(len(new), new[:5])
"""


def test_the_updater_warm_up_leaves_its_first_update_nothing_to_import(tmp_path: Path) -> None:
    """The first model a process builds on the meta device imports torch._dynamo (about 2 s on
    two cores): the updater pays it when it starts, not in its first update's load."""
    from kgweave.settings import Settings
    from serving_support import train_demo_model

    model = train_demo_model(Settings(data_dir=tmp_path / "data"), tmp_path / "m", epochs=1)
    out = subprocess.run([sys.executable, "-c", WARM, str(model)], capture_output=True,
                         text=True, timeout=HANG_GUARD_S, check=True)  # fmt: skip
    assert out.stdout.strip() == "0 []", f"the load imported {out.stdout.strip()} ..."
