import torch

from byon.config import load_config
from byon.corruption.patches import norm_pix, patchify
from byon.engine.context import DataInfo, StepContext
from byon.methods.mae import MAE
from byon.nn.vit import resolve_shape

INFO = DataInfo(name="synthetic", img_size=28, in_chans=1, num_classes=10, mean=(0.5,), std=(0.25,))


def make(**mae) -> MAE:
    cfg = load_config(None, {"method": "mae", "model": {"preset": "vit-test"}, "mae": mae})
    torch.manual_seed(0)
    return MAE(cfg.method_cfg, resolve_shape(cfg.model, 28, 1), INFO)


def ctx(seed: int = 0) -> StepContext:
    return StepContext(generator=torch.Generator().manual_seed(seed))


def test_loss_is_mse_on_masked_norm_pix_patches_only():
    mae = make()
    images = torch.randn(4, 1, 28, 28)
    captured = {}
    orig = mae.decoder.forward

    def spy(latent, ids_restore):
        captured["pred"] = orig(latent, ids_restore)
        return captured["pred"]

    mae.decoder.forward = spy
    out = mae({"image": images}, ctx())
    from byon.corruption.masking import random_masking

    m = random_masking(4, 49, 0.75, torch.Generator().manual_seed(0))
    target = norm_pix(patchify(images, 4))
    err = (captured["pred"] - target).pow(2).mean(-1)
    torch.testing.assert_close(out["loss"], err[m.mask].mean())


def test_visible_patches_do_not_reach_the_loss():
    """Changing the decoder output on visible patches leaves the loss unchanged."""
    mae = make()
    images = torch.randn(2, 1, 28, 28)
    from byon.corruption.masking import random_masking

    m = random_masking(2, 49, 0.75, torch.Generator().manual_seed(0))
    orig = mae.decoder.forward
    base = mae({"image": images}, ctx())["loss"]
    mae.decoder.forward = lambda lat, ids: orig(lat, ids) + 100.0 * (~m.mask).unsqueeze(-1)
    torch.testing.assert_close(mae({"image": images}, ctx())["loss"], base)
    mae.decoder.forward = lambda lat, ids: orig(lat, ids) + 1.0 * m.mask.unsqueeze(-1)
    assert mae({"image": images}, ctx())["loss"] > base


def test_one_train_step_reduces_loss_on_a_fixed_batch():
    mae = make()
    images = torch.randn(8, 1, 28, 28)
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = mae({"image": images}, ctx())["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert mae.encoder.blocks[0].attn.qkv.weight.grad is not None


def test_raw_pixel_target_when_norm_pix_off():
    mae = make(norm_pix=False)
    images = torch.randn(2, 1, 28, 28)
    pred_holder = {}
    orig = mae.decoder.forward
    mae.decoder.forward = lambda lat, ids: pred_holder.setdefault("p", orig(lat, ids))
    out = mae({"image": images}, ctx())
    from byon.corruption.masking import random_masking

    m = random_masking(2, 49, 0.75, torch.Generator().manual_seed(0))
    err = (pred_holder["p"] - patchify(images, 4)).pow(2).mean(-1)
    torch.testing.assert_close(out["loss"], err[m.mask].mean())
