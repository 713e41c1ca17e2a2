"""Every kgweave process tunes glibc's malloc for reuse, unless the user chose otherwise."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from kgweave.allocator import user_chose_allocator

PROBE = r"""
import json
from kgweave.allocator import reuse_freed_memory
print(json.dumps(reuse_freed_memory()))
"""

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _probe(**extra: str) -> bool:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**env, **extra}, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return bool(json.loads(done.stdout))


def test_user_choices_are_recognised() -> None:
    assert not user_chose_allocator({})
    assert user_chose_allocator({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert user_chose_allocator({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    assert user_chose_allocator({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"})
    assert not user_chose_allocator({"LD_PRELOAD": "/usr/lib/libfoo.so"})


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_reuse_freed_memory_applies_on_glibc() -> None:
    assert _probe() is True


def test_a_users_malloc_settings_are_left_alone() -> None:
    assert _probe(MALLOC_TRIM_THRESHOLD_="0") is False


@pytest.mark.parametrize(("command", "tuned"), [("train", 1), ("eval", 1), ("serve", 0)])
def test_the_cli_tunes_malloc_except_for_serving(command: str, tuned: int) -> None:
    probe = (
        f"import sys; sys.argv = ['kgweave', {command!r}]\n"
        "import kgweave.allocator as a\n"
        "calls = []\n"
        "a.reuse_freed_memory = lambda: calls.append(1)\n"
        "import kgweave.cli.main\n"
        "print(len(calls))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == str(tuned)
