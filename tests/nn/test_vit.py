import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from byon.config import ModelConfig
from byon.errors import ByonError
from byon.nn.pos_embed import sincos_2d
from byon.nn.vit import ViTEncoder, attention_weights, resolve_shape


@pytest.fixture
def enc() -> ViTEncoder:
    torch.manual_seed(0)
    return ViTEncoder(resolve_shape(ModelConfig(preset="vit-test"), 28, 1)).eval()


def test_presets_resolve_to_the_issue_shapes():
    micro = resolve_shape(ModelConfig(preset="vit-micro"), 28, 1)
    assert (micro.embed_dim, micro.depth, micro.num_heads, micro.patch_size, micro.num_patches) == (128, 6, 4, 4, 49)
    tiny = resolve_shape(ModelConfig(preset="vit-tiny"), 28, 1)
    assert (tiny.embed_dim, tiny.depth, tiny.num_heads) == (192, 12, 3)
    base = resolve_shape(ModelConfig(preset="vit-base"), 224, 3)
    assert (base.patch_size, base.embed_dim, base.num_patches) == (16, 768, 196)


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(ByonError, match="not divisible by patch size 5"):
        resolve_shape(ModelConfig(preset="vit-test", patch_size=5), 28, 1)
    with pytest.raises(ByonError, match="expects 3 channels but the dataset has 1"):
        resolve_shape(ModelConfig(preset="vit-test", in_chans=3), 28, 1)
    with pytest.raises(ByonError, match="did you mean 'vit-micro'"):
        resolve_shape(ModelConfig(preset="vit-mikro"), 28, 1)


def test_state_dict_loads_into_plain_timm_vit_with_identical_features(enc):
    s = enc.shape
    timm_vit = VisionTransformer(img_size=s.img_size, patch_size=s.patch_size, in_chans=s.in_chans, num_classes=0,
                                 embed_dim=s.embed_dim, depth=s.depth, num_heads=s.num_heads,
                                 mlp_ratio=s.mlp_ratio).eval()
    timm_vit.load_state_dict(enc.state_dict(), strict=True)
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(timm_vit.forward_features(x), enc.forward_encoder(x))
    torch.testing.assert_close(timm_vit(x), enc.features(x)["cls"])
    torch.testing.assert_close(enc(x), timm_vit(x))  # timm's own forward on our subclass (a classifier head path)


def test_pos_embed_is_fixed_sincos_with_zero_cls_slot(enc):
    assert not enc.pos_embed.requires_grad
    torch.testing.assert_close(enc.pos_embed, sincos_2d(32, 7, 7))
    assert enc.pos_embed[0, 0].abs().sum() == 0


def test_keep_subset_equals_gathering_full_embedding(enc):
    x = torch.randn(2, 1, 28, 28)
    ids = torch.tensor([[3, 0, 48], [10, 11, 12]])
    full = enc.embed(x)
    sub = enc.embed(x, ids_keep=ids)
    assert sub.shape == (2, 4, 32)
    torch.testing.assert_close(sub[:, 1:], torch.gather(full[:, 1:], 1, ids[..., None].expand(-1, -1, 32)))


def test_mask_token_replaces_exactly_the_masked_patches(enc):
    x = torch.randn(2, 1, 28, 28)
    mask = torch.zeros(2, 49, dtype=torch.bool)
    mask[0, 5] = True
    token = torch.full((1, 1, 32), 7.0)
    out = enc.embed(x, mask=mask, mask_token=token)
    ref = enc.embed(x)
    torch.testing.assert_close(out[0, 6], token[0, 0] + enc.pos_embed[0, 6])
    keep = torch.ones(2, 50, dtype=torch.bool)
    keep[0, 6] = False
    torch.testing.assert_close(out[keep], ref[keep])


def test_intermediates_attention_and_hooks(enc):
    x = enc.embed(torch.randn(2, 1, 28, 28))
    out, inter, attn = enc.forward_tokens(x, return_layers=(0, 1), return_attn=(1,))
    assert set(inter) == {0, 1} and attn[1].shape == (2, 2, 50, 50)
    torch.testing.assert_close(attn[1].sum(-1), torch.ones(2, 2, 50))
    torch.testing.assert_close(enc.norm(inter[1]), out)
    # the explicit attention matches what the fused block computes
    blk = enc.blocks[0]
    a = attention_weights(blk, x)
    v = blk.attn.qkv(blk.norm1(x)).reshape(2, 50, 3, 2, 16).permute(2, 0, 3, 1, 4)[2]
    manual = blk.attn.proj((a @ v).transpose(1, 2).reshape(2, 50, 32))
    torch.testing.assert_close(manual, blk.attn(blk.norm1(x)), atol=1e-5, rtol=1e-4)
    zeroed, _, _ = enc.forward_tokens(x, hooks={1: lambda h: torch.zeros_like(h)})
    torch.testing.assert_close(zeroed, enc.norm(torch.zeros_like(x)))


def test_grad_checkpointing_gives_the_same_gradients(enc):
    x = torch.randn(2, 1, 28, 28)
    enc.train()
    enc.forward_encoder(x).sum().backward()
    g1 = enc.blocks[0].attn.qkv.weight.grad.clone()
    enc.zero_grad()
    enc.set_grad_checkpointing(True)
    enc.forward_encoder(x).sum().backward()
    torch.testing.assert_close(enc.blocks[0].attn.qkv.weight.grad, g1)


def test_learned_pos_embed_is_trained_and_sincos_is_fixed():
    torch.manual_seed(0)
    learned = ViTEncoder(resolve_shape(ModelConfig(preset="vit-test", pos_embed="learned"), 28, 1))
    fixed = ViTEncoder(resolve_shape(ModelConfig(preset="vit-test"), 28, 1))
    assert learned.pos_embed.requires_grad and not fixed.pos_embed.requires_grad
    assert torch.equal(fixed.pos_embed, sincos_2d(32, 7, 7))
    assert 0.01 < float(learned.pos_embed.detach().std()) < 0.03  # timm's trunc-normal(0.02) table, not sin-cos
    learned.features(torch.randn(2, 1, 28, 28))["cls"][:, 0].sum().backward()
    assert learned.pos_embed.grad is not None and learned.pos_embed.grad.abs().sum() > 0
    with pytest.raises(ByonError, match="pos_embed"):
        resolve_shape(ModelConfig(preset="vit-test", pos_embed="rope"), 28, 1)
