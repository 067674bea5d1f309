import torch

from byon.corruption.patches import norm_pix, patchify
from byon.methods.mae import MAE

from .common import assert_trains_every_parameter, make_method, step_ctx


def make(**mae) -> MAE:
    return make_method("mae", **mae)


def test_loss_is_mse_on_masked_norm_pix_patches_only():
    mae = make()
    images = torch.randn(4, 1, 28, 28)
    captured = {}
    orig = mae.decoder.forward

    def spy(latent, ids_restore):
        captured["pred"] = orig(latent, ids_restore)
        return captured["pred"]

    mae.decoder.forward = spy
    out = mae({"image": images}, step_ctx())
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
    base = mae({"image": images}, step_ctx())["loss"]
    mae.decoder.forward = lambda lat, ids: orig(lat, ids) + 100.0 * (~m.mask).unsqueeze(-1)
    torch.testing.assert_close(mae({"image": images}, step_ctx())["loss"], base)
    mae.decoder.forward = lambda lat, ids: orig(lat, ids) + 1.0 * m.mask.unsqueeze(-1)
    assert mae({"image": images}, step_ctx())["loss"] > base


def test_one_train_step_reduces_loss_on_a_fixed_batch():
    mae = make()
    images = torch.randn(8, 1, 28, 28)
    losses = assert_trains_every_parameter(mae, lambda: {"image": images}, steps=5)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert mae.encoder.blocks[0].attn.qkv.weight.grad is not None


def test_raw_pixel_target_when_norm_pix_off():
    mae = make(norm_pix=False)
    images = torch.randn(2, 1, 28, 28)
    pred_holder = {}
    orig = mae.decoder.forward
    mae.decoder.forward = lambda lat, ids: pred_holder.setdefault("p", orig(lat, ids))
    out = mae({"image": images}, step_ctx())
    from byon.corruption.masking import random_masking

    m = random_masking(2, 49, 0.75, torch.Generator().manual_seed(0))
    err = (pred_holder["p"] - patchify(images, 4)).pow(2).mean(-1)
    torch.testing.assert_close(out["loss"], err[m.mask].mean())
