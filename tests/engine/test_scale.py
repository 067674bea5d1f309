"""The engine's scale and speed paths: the sync-free non-finite guard (fused AdamW), activation checkpointing
through the methods' own encoder calls, fused attention, `train.compile`, and — on a CUDA machine only —
no host sync between log steps, bf16 + compile, and the dataset staged on the GPU."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from byon.data.imagedata import ImageData
from byon.engine.guard import NonFiniteLossError
from byon.engine.loader import RunLoader
from byon.engine.module import PretrainModule
from byon.engine.run import compile_blocks, train
from byon.errors import ByonError
from byon.methods import METHODS, build_method, load_config
from byon.methods.context import StepContext, step_generator
from byon.nn.vit import EncoderShape, ViTEncoder
from byon.rundir import read_checkpoint

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
ENCODER_METHODS = [m for m in ("mae", "byon", "ijepa") if m in METHODS]
# methods whose encoder blocks run under adaLN modulation (nn.cond.modulated_blocks), not through ViTEncoder
MODULATED_METHODS = [m for m in ("maskdit", "ldae", "ddae") if m in METHODS]
TINY = {"data": {"dataset": "synthetic", "subset": 64}, "model": {"preset": "vit-test"},
        "train": {"epochs": 1, "batch_size": 16, "progress": False, "log_every_n_steps": 1}}


def config(method: str, model: dict | None = None, **train_extra):
    return load_config(None, {"method": method, **TINY, "model": TINY["model"] | (model or {}),
                              "train": TINY["train"] | train_extra})


def nan_loss_at(monkeypatch: pytest.MonkeyPatch, steps: set[int]) -> None:
    shard_step = PretrainModule.shard_step

    def patched(self, raw, labels, step, rank, world_size):
        out = shard_step(self, raw, labels, step, rank, world_size)
        return out | {"loss": out["loss"] * float("nan")} if step in steps else out

    monkeypatch.setattr(PretrainModule, "shard_step", patched)


@pytest.fixture(params=["cpu-fused", pytest.param("cuda", marks=needs_cuda)])
def device_guard(request, monkeypatch) -> str:
    """The device-side guard: fused AdamW, forced on CPU (its fused kernel takes `found_inf` too)."""
    if request.param == "cpu-fused":
        monkeypatch.setattr(PretrainModule, "_fused", lambda self: True)
        return "cpu"
    return "gpu"


def test_device_guard_skips_a_nan_step_without_a_trace(tmp_path, monkeypatch, device_guard):
    """BYON (EMA teacher, timestep histogram buffer): 2 good steps == 2 good steps + 1 NaN step."""
    kw = {"accelerator": device_guard, "precision": "32-true"}
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(config("byon", max_steps=2, **kw), ref)
    nan_loss_at(monkeypatch, {2})
    train(config("byon", max_steps=3, **kw), run)
    a, b = read_checkpoint(ref / "checkpoints" / "last.ckpt"), read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert b["optimizer_states"][0]["param_groups"][0]["fused"] is True
    assert b["global_step"] == 3 and b["byon"]["skipped_steps"] == 1
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for k in sa:  # moments and the step count (fused AdamW un-counts a skipped step)
            assert torch.equal(sa[k], sb[k]), k


def test_device_guard_stops_at_the_next_log_step(tmp_path, monkeypatch, device_guard):
    kw = {"accelerator": device_guard, "precision": "32-true", "max_bad_steps": 3, "ckpt_every_steps": 1,
          "log_every_n_steps": 2}
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(config("mae", max_steps=1, **kw), ref)
    nan_loss_at(monkeypatch, {1, 2, 3})
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3, 3 steps in a row \(train.max_bad"):
        train(config("mae", **kw), run)
    kept = read_checkpoint(run / "checkpoints" / "last.ckpt")
    for k, v in read_checkpoint(ref / "checkpoints" / "last.ckpt")["state_dict"].items():
        assert torch.equal(v, kept["state_dict"][k]), k  # skipped steps changed nothing


def one_step(method: torch.nn.Module, info) -> None:
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (4, info.in_chans, info.img_size, info.img_size), dtype=torch.uint8, generator=g)
    images = (raw.float() / 255 - 0.5) / 0.25
    ctx = StepContext(generator=step_generator(0, 0, 0), step=0, progress=0.0, total_steps=10)
    method.train()
    method({"image": images, "raw": raw, "label": torch.zeros(4, dtype=torch.long)}, ctx)["loss"].backward()


@pytest.mark.parametrize("name", ENCODER_METHODS + MODULATED_METHODS)
def test_grad_checkpointing_recomputes_the_encoder_blocks_with_identical_gradients(name):
    """`model.grad_checkpointing` through each method's own encoder calls (visible-token subsets, mask
    embeddings): every online-encoder block runs again in backward, fewer activations are kept, and the
    gradients are the same."""
    from byon.data import DataInfo

    info = DataInfo(name="synthetic", img_size=28, in_chans=1, num_classes=10, mean=(0.5,), std=(0.25,))
    runs = {}
    for ckpt in (False, True):
        torch.manual_seed(0)
        method, _ = build_method(config(name, {"grad_checkpointing": ckpt}), info)
        if hasattr(method, "setup_data"):  # l-DAE's PCA tokenizer
            raw = torch.randint(0, 256, (48, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
            method.setup_data(ImageData(raw, None, [], "synthetic"))
        calls = []
        for blk in method.encoder.blocks:  # attn runs in the plain and the modulated block; recompute stops early
            blk.attn.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        saved = []

        def pack(t, saved=saved):
            saved.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            one_step(method, info)
        runs[ckpt] = (len(calls), sum(saved), {n: p.grad for n, p in method.named_parameters() if p.grad is not None})
    (plain_calls, plain_bytes, plain_grads), (ck_calls, ck_bytes, ck_grads) = runs[False], runs[True]
    depth = len(method.encoder.blocks)
    assert plain_calls >= depth and ck_calls == 2 * plain_calls  # each online pass recomputed once in backward
    assert ck_bytes < plain_bytes
    assert plain_grads.keys() == ck_grads.keys()
    for n, gr in plain_grads.items():
        torch.testing.assert_close(ck_grads[n], gr, rtol=1e-5, atol=1e-7, msg=n)


def test_the_encoder_uses_fused_attention_unless_weights_are_asked_for(monkeypatch):
    enc = ViTEncoder(EncoderShape(28, 1, 4, 32, 3, 2, 2.0))
    assert all(blk.attn.fused_attn for blk in enc.blocks)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = []
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    x = enc.embed(torch.randn(2, 1, 28, 28))
    out, _, attn = enc.forward_tokens(x, return_attn=(1,))
    assert len(calls) == 3  # every block's forward is fused; the asked-for weights are computed beside it
    assert attn[1].shape == (2, 2, 50, 50)
    torch.testing.assert_close(attn[1].sum(-1), torch.ones(2, 2, 50))


def test_compile_option_is_validated_and_compiles_blocks_in_place():
    with pytest.raises(ByonError, match="train.compile: expected true or false"):
        config("mae", compile="maybe")
    assert config("mae", compile=True).train.compile is True
    from byon.data import DataInfo

    info = DataInfo(name="synthetic", img_size=28, in_chans=1, num_classes=10, mean=(0.5,), std=(0.25,))
    method, _ = build_method(config("mae"), info)
    keys = list(method.state_dict())
    # vit-test: 2 encoder blocks + MAE's 2 decoder blocks; compiled lazily (nothing runs here)
    assert compile_blocks(method) == 4
    assert list(method.state_dict()) == keys


def test_the_resolved_global_batch_and_lr_are_in_the_summary(tmp_path):
    import json

    run = train(config("mae", max_steps=1, batch_size=8), tmp_path / "run")
    s = json.loads((run / "summary.json").read_text())
    assert (s["per_device_batch"], s["global_batch"], s["world_size"]) == (8, 8, 1)
    assert s["lr"] == pytest.approx(1.5e-4 * 8 / 256)  # MAE's blr · global batch / 256


# --- on a CUDA machine only -------------------------------------------------------------------------------


def sync_free_steps(log_every: int):
    """A callback that turns on torch's sync debug mode for the steps that are not log steps (from their
    batch start to their batch end; the module's own batch-end hook, which reads the guard on log steps,
    runs after the callbacks')."""
    from lightning.pytorch.callbacks import Callback

    class SyncCheck(Callback):
        def __init__(self) -> None:
            self.checked = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            step = trainer.global_step
            if step > 0 and (step + 1) % log_every:  # step 0 builds the optimizer state
                torch.cuda.set_sync_debug_mode("warn")
                self.checked += 1

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            torch.cuda.set_sync_debug_mode(0)

    return SyncCheck()


METHOD_SYNCS = {  # known host syncs inside methods (the engine has none between log steps)
    "byon": "bincount replaced by index_add_; not yet verified sync-free on a GPU (IAN, SUE)",
    "ijepa": "multi-block masks of data-dependent size (nonzero, int(...), float(u))",
}


@needs_cuda
@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.xfail(reason=METHOD_SYNCS[m]))
                                  if m in METHOD_SYNCS else m for m in ENCODER_METHODS])
def test_cuda_steps_between_log_steps_never_sync_the_host(tmp_path, name):
    check = sync_free_steps(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config(name, accelerator="gpu", log_every_n_steps=4, max_steps=8), tmp_path / "run",
              callbacks=(check,))
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert check.checked == 5 and not syncs, syncs[:3]


@needs_cuda
def test_cuda_bf16_compiled_checkpointed_training_runs(tmp_path):
    import json

    cfg = config("byon", {"grad_checkpointing": True}, accelerator="gpu", compile=True, max_steps=3)
    run = train(cfg, tmp_path / "run")
    s = json.loads((run / "summary.json").read_text())
    assert s["precision"] == "bf16-mixed" and s["steps"] == 3 and math.isfinite(s["last_logs"]["train/loss"])


@needs_cuda
def test_cuda_dataset_goes_to_the_gpu_or_batches_come_pinned(tmp_path):
    from byon.data import load_dataset

    data = load_dataset("synthetic", "train", subset=64)
    loader = RunLoader(data, 16)
    assert loader.stage(torch.device("cuda", 0)) == "device"
    images, labels = next(iter(loader))
    assert images.is_cuda and labels.is_cuda
    small = RunLoader(load_dataset("synthetic", "train", subset=64), 16)
    small.max_fraction = 0.0
    assert small.stage(torch.device("cuda", 0)) == "pinned"
    images, labels = next(iter(small))
    assert images.is_pinned() and labels.is_pinned() and not images.is_cuda


def test_fsdp_is_lightnings_and_refused_for_ema_methods(tmp_path):
    with pytest.raises(ByonError, match="shards the parameters, but byon's EMA teacher"):
        train(config("byon", strategy="fsdp", accelerator="cpu", devices=2), tmp_path / "a")
    if not CUDA:  # Lightning's FSDP needs GPUs; its message comes through as a ByonError
        with pytest.raises(ByonError, match="fsdp.*requires a GPU accelerator"):
            train(config("mae", strategy="fsdp", accelerator="cpu", devices=2), tmp_path / "b")
