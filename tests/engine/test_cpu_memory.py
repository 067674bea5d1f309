"""engine/cpu_memory.py: glibc keeps a CPU run's freed activations mapped, and a user's MALLOC_* settings win."""

from __future__ import annotations

import platform
import resource
import sys

import pytest
import torch

from byon.engine import cpu_memory


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_memory, "_applied", None)


def test_user_malloc_settings_win(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert cpu_memory.keep_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_activations_stay_mapped(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in __import__("os").environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(k)
    assert cpu_memory.keep_freed_memory() is True
    assert cpu_memory.keep_freed_memory() is True  # once per process, then a no-op

    def faults_per_round() -> int:
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            x = torch.ones(10 << 20)  # 40 MB: past glibc's largest (dynamic) mmap threshold, 32 MB
            del x
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0

    faults_per_round()
    # glibc's defaults mmap each 40 MB anew: ~10,240 faults each, 51,200 a round; kept, 10,240 at most here
    assert faults_per_round() < 25_000
