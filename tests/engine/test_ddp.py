"""DDP on two CPU processes (gloo, launched as torchrun does) against one process with the doubled batch.

Every sample draws its crops, masks and noise from the generator of (seed, step, its position in the global
batch) (`byon.draws`), so one process with batch 2B draws what the two ranks draw. For MAE (no batch
statistics) that plain one-process run is the DDP run, up to float rounding. Methods whose loss couples the
samples of a rank's batch (BatchNorm in a head, I-JEPA's per-batch keep count) are checked against a
reference that splits its batch of 2B into the two ranks' shards (`PretrainModule.shard_step`), averaging the
results — what DDP's gradient all-reduce and our cross-rank mean of the logged scalars compute. The DDP side is
the production path, unpatched except for a hook that saves each rank's final state.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byon.data.shards import write_shards
from byon.draws import SampleDraws, rand
from byon.engine.module import PretrainModule
from byon.engine.run import train
from byon.errors import ByonError
from byon.methods import METHODS, load_config

pytestmark = pytest.mark.slow

CANDIDATES = ["mae", "byon", "ijepa"]  # ijepa joins once it is registered
PRESENT = [m for m in CANDIDATES if m in METHODS]
B = 8  # per rank; the reference runs 2B = 16, 64 images → 4 steps, one epoch

WORKER = r'''
import json
import sys
from pathlib import Path

import torch

from byon.methods import load_config
from byon.data.shards import write_shards
from byon.engine.module import PretrainModule
from byon.engine.run import train

jobs = json.loads(Path(sys.argv[1]).read_text())
current = {}
end = PretrainModule.on_train_end


def save_rank_state(self):
    end(self)
    torch.save({"state": {k: v.detach().clone() for k, v in self.method.state_dict().items()},
                "params": [n for n, _ in self.method.named_parameters()],
                "norms": sorted({type(m).__name__ for m in self.method.modules() if "BatchNorm" in type(m).__name__})},
               current["out"] / f"rank{self.global_rank}.pt")


PretrainModule.on_train_end = save_rank_state
for job in jobs:
    current["out"] = Path(job["out"])
    train(load_config(None, job["overrides"]), job["out"])
'''


def overrides(method: str, batch: int, **train_extra) -> dict:
    return {"method": method, "data": {"dataset": "synthetic", "subset": 64}, "model": {"preset": "vit-test"},
            "train": {"epochs": 1, "batch_size": batch, "progress": False, "log_every_n_steps": 1,
                      "accelerator": "cpu", **train_extra}}


def ddp_overrides(method: str, **extra) -> dict:
    return overrides(method, B, devices=2, strategy="ddp", **extra)


def logged(run: Path) -> list[dict[str, float]]:
    """The train/* scalars per step (rank 0 writes the CSV), without the timing."""
    with open(run / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    return [{k: float(v) for k, v in r.items() if k.startswith("train/") and v and k != "train/images_per_s"}
            for r in rows]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(script: Path, args: list[str], nproc: int = 2) -> list[subprocess.Popen]:
    """The processes `torchrun --standalone --nproc-per-node N` would start, with its environment (Lightning
    takes them for a torchelastic launch and joins them), minus torchrun's own start-up."""
    port = free_port()
    procs = []
    for rank in range(nproc):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), WORLD_SIZE=str(nproc), RANK=str(rank), LOCAL_RANK=str(rank),
                   GROUP_RANK="0", LOCAL_WORLD_SIZE=str(nproc), TORCHELASTIC_RUN_ID="byon-test")
        procs.append(subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def wait(procs: list[subprocess.Popen], timeout: float) -> None:
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the DDP processes did not finish in {timeout:.0f} s (a hang in a collective?)")
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank}:\n" + log[-4000:]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> dict[str, Path]:
    """Every DDP job in one pair of processes (one start-up for all of them); the one-process references
    run here meanwhile."""
    root = tmp_path_factory.mktemp("ddp")
    jobs = {m: ddp_overrides(m) for m in PRESENT}
    (root / "jobs.json").write_text(json.dumps([{"out": str(root / n), "overrides": o} for n, o in jobs.items()]))
    (root / "worker.py").write_text(WORKER)
    procs = launch(root / "worker.py", [str(root / "jobs.json")])
    try:
        refs = {m: reference_run(m, root / f"ref-{m}") for m in PRESENT}
        train(load_config(None, overrides("mae", 2 * B)), root / "one-mae")  # plain: one process, batch 2B
    finally:
        wait(procs, timeout=300)
    return {n: root / n for n in jobs} | {f"ref-{m}": p for m, p in refs.items()} | {"one-mae": root / "one-mae"}


def reference_run(method: str, out: Path) -> Path:
    """One process, batch 2B, each step split into the two ranks' shards (rank r: samples r, r + 2, …, as
    the loader deals them), each run as rank r of 2; the outputs are averaged."""
    shard_step = PretrainModule.shard_step

    def two_ranks(self, raw, labels, step, rank, world_size):
        outs = [shard_step(self, raw[r::2], labels[r::2], step, r, 2) for r in range(2)]
        return {k: (outs[0][k] + outs[1][k]) / 2 for k in outs[0]}

    PretrainModule.shard_step = two_ranks
    try:
        train(load_config(None, overrides(method, 2 * B)), out)
    finally:
        PretrainModule.shard_step = shard_step
    return out


def test_ranks_draw_their_samples_draws_of_the_one_process_batch():
    one = rand(SampleDraws(0, 5, range(8)), 8, 3)
    for rank in (0, 1):  # rank r of 2 holds global positions r, r + 2, …
        assert torch.equal(rand(SampleDraws(0, 5, range(rank, 8, 2)), 4, 3), one[rank::2])
    assert not torch.equal(one[0], one[1])


def test_mae_on_two_processes_repeats_one_process_at_the_same_global_batch(ddp_runs):
    """The per-step losses of a plain one-process run with batch 2B and of two DDP ranks with B each."""
    a, b = logged(ddp_runs["mae"]), logged(ddp_runs["one-mae"])
    assert len(a) == len(b) == 4
    for step, (x, y) in enumerate(zip(a, b)):
        assert x.keys() == y.keys(), step
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-7), (step, k)


@pytest.mark.parametrize("method", CANDIDATES)
def test_two_ranks_of_b_repeat_one_process_of_2b(ddp_runs, method):
    if method not in METHODS:
        pytest.skip(f"{method} is not registered")
    run, ref = ddp_runs[method], ddp_runs[f"ref-{method}"]
    # every logged scalar per step: the cross-rank mean equals the reference's mean over the two shards
    a, b = logged(run), logged(ref)
    assert len(a) == len(b) == 4
    for step, (x, y) in enumerate(zip(a, b)):
        assert x.keys() == y.keys(), step
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-7), (step, k)

    # the ranks end with identical weights, EMA targets included (buffers are rank-local between DDP's
    # broadcasts from rank 0: BN running statistics, BYON's timestep histogram)
    r0, r1 = (torch.load(run / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    params = r0["params"]  # the EMA targets are parameters too (requires_grad=False)
    assert method == "mae" or any(k.startswith("target_") for k in params)
    for k in params:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    # ... and the reference's weights after the same four updates
    ref_state = torch.load(ref / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for k in params:
        torch.testing.assert_close(r0["state"][k], ref_state[f"method.{k}"], rtol=1e-4, atol=1e-6, msg=k)

    # one set of checkpoints, written by rank 0 only; the resolved global batch and lr are the reference's
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch=0000.ckpt", "last.ckpt"]
    s, s_ref = (json.loads((d / "summary.json").read_text()) for d in (run, ref))
    assert (s["world_size"], s["per_device_batch"], s["global_batch"]) == (2, B, 2 * B)
    assert s["global_batch"] == s_ref["global_batch"] and s["lr"] == s_ref["lr"]


def test_sync_bn_on_cpu_processes_is_a_clear_error(tmp_path):
    """torch's SyncBatchNorm has no CPU kernels; the GPU path is Lightning's `sync_batchnorm`."""
    with pytest.raises(ByonError, match="train.sync_bn needs CUDA devices"):
        train(load_config(None, ddp_overrides("byon", sync_bn=True)), tmp_path / "run")


SHARD_WORKER = r'''
import json
import os
import sys
from pathlib import Path

from byon.data.shards import write_shards
from byon.engine.module import PretrainModule
from byon.engine.run import train
from byon.methods import load_config

out, overrides = Path(sys.argv[1]), json.loads(sys.argv[2])
seen = []
step = PretrainModule.training_step


def record(self, batch, batch_idx):
    seen.append([self.current_epoch, batch[0][:, 0, 0, 0].tolist()])  # red: the sample's id
    return step(self, batch, batch_idx)


PretrainModule.training_step = record
train(load_config(None, overrides), out)
(out / f"seen-{os.environ['RANK']}.json").write_text(json.dumps(seen))
'''


def test_two_process_ddp_over_shards_sees_each_sample_once_per_epoch(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    n = 40  # 20 per rank: 5 batches of 4 per epoch
    rng = np.random.default_rng(0)
    for i in range(n):  # red is the sample's id, uniform, so any crop keeps it; green and blue vary
        pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        pixels[..., 0] = i
        Image.fromarray(pixels).save(images / f"{i:03d}.png")
    write_shards(images, tmp_path / "shards", shard_size=10)
    overrides = {"method": "mae", "data": {"dataset": "shards", "root": str(tmp_path / "shards"), "image_size": 16,
                                           "num_workers": 1},
                 "model": {"preset": "vit-test"},
                 "train": {"epochs": 2, "batch_size": 4, "progress": False, "accelerator": "cpu", "devices": 2,
                           "strategy": "ddp"}}
    (tmp_path / "worker.py").write_text(SHARD_WORKER)
    wait(launch(tmp_path / "worker.py", [str(tmp_path / "run"), json.dumps(overrides)]), timeout=300)
    seen = [json.loads((tmp_path / "run" / f"seen-{r}.json").read_text()) for r in (0, 1)]
    for epoch in (0, 1):
        per_rank = [[i for e, ids in s if e == epoch for i in ids] for s in seen]
        assert [len(r) for r in per_rank] == [20, 20]
        both = per_rank[0] + per_rank[1]
        assert sorted(both) == list(range(n))  # every sample once, the ranks' shards disjoint
    assert [i for e, ids in seen[0] if e == 0 for i in ids] != [i for e, ids in seen[0] if e == 1 for i in ids]
