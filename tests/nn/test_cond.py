"""adaLN modulation of an existing timm ViT (MaskDiT's encoder) and its folding into plain weights."""

import torch
from timm.models.vision_transformer import VisionTransformer

from byon.nn.cond import BlockModulation, fold_modulation, forward_modulated, modulated_block
from byon.nn.vit import EncoderShape, ViTEncoder

SHAPE = EncoderShape(img_size=28, in_chans=1, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def test_zero_initialised_modulation_makes_every_block_the_identity():
    torch.manual_seed(0)
    enc, mod = ViTEncoder(SHAPE).eval(), BlockModulation(32, 2)
    x = torch.randn(3, 50, 32)
    for blk, m in zip(enc.blocks, mod(torch.randn(3, 32))):
        torch.testing.assert_close(modulated_block(blk, x, m), x)


def test_unit_gates_and_no_shift_or_scale_give_the_plain_timm_block():
    torch.manual_seed(0)
    enc = ViTEncoder(SHAPE).eval()
    x = torch.randn(3, 50, 32)
    ones, zeros = torch.ones(3, 32), torch.zeros(3, 32)
    mod = torch.cat([zeros, zeros, ones, zeros, zeros, ones], dim=1)
    torch.testing.assert_close(modulated_block(enc.blocks[0], x, mod), enc.blocks[0](x))


def test_folding_at_a_fixed_conditioning_reproduces_the_modulated_encoder():
    torch.manual_seed(0)
    enc, mod = ViTEncoder(SHAPE).eval(), BlockModulation(32, 2, cond_dim=8)
    for p in mod.parameters():
        p.data = 0.3 * torch.randn_like(p)
    c, scale = torch.randn(8), 2.5
    images = torch.randn(4, 1, 28, 28)
    want = forward_modulated(enc, enc.embed(images * scale), mod, c.expand(4, 8))
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    folded = fold_modulation(enc, mod, c, input_scale=scale)
    torch.testing.assert_close(folded.forward_encoder(images), want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(enc.forward_encoder(images), want, atol=1e-3)
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in before.items())  # the original is untouched
    # still an ordinary timm ViT
    timm_vit = VisionTransformer(img_size=28, patch_size=4, in_chans=1, num_classes=0, embed_dim=32, depth=2,
                                 num_heads=2, mlp_ratio=2.0).eval()
    timm_vit.load_state_dict(folded.state_dict(), strict=True)
    torch.testing.assert_close(timm_vit.forward_features(images), want, atol=1e-5, rtol=1e-4)
