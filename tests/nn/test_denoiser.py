import pytest
import torch

from byon.errors import ByonError
from byon.nn.denoiser import CondViT, has_dit_blocks
from byon.nn.vit import EncoderShape

SHAPE = EncoderShape(img_size=16, in_chans=1, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def make(seed: int = 0, **kw) -> CondViT:
    torch.manual_seed(seed)
    net = CondViT(SHAPE, **kw).eval()
    with torch.no_grad():  # leave adaLN-Zero's identity start, so the conditioning matters
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("split", ["dit", "mae"])
def test_shapes_and_block_count(split):
    net = make(decoder_depth=3, split=split)
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([0, 10, 500])
    assert net(x, t).shape == (3, 16, 16)
    assert net.encoder_depth == 2 and net.depth == 5
    outs = net.block_outputs(x, t)
    assert len(outs) == 5 and all(o.shape == (3, 17, 32) for o in outs)
    assert len(net.block_outputs(x, t, upto=1)) == 1
    with pytest.raises(ByonError, match="blocks 1…5"):
        net.block_outputs(x, t, upto=6)


@pytest.mark.parametrize("split", ["dit", "mae"])
def test_block_outputs_follow_the_decoder_forward(split):
    """block_outputs walks the decoder by hand; its last output must give forward's prediction."""
    net = make(split=split)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3.0, 700.0])
    last = net.block_outputs(x, t)[-1]
    c = net.decoder.conditioning(t, None, 2) if split == "mae" else net.t_embed(t)
    torch.testing.assert_close(net.decoder.pred(net.decoder.norm(last, c))[:, 1:], net(x, t))
    torch.testing.assert_close(net.block_outputs(x, t, upto=2)[-1], net.block_outputs(x, t)[1])


def test_dit_split_is_one_stack_under_one_conditioning():
    """split dit: decoder block 1 reads encoder block 2's raw tokens (no norm, re-embedding or second positional
    embedding) under the encoder's embedding of t; the encoder's final norm is frozen and off the path."""
    net = make(split="dit")
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3.0, 700.0])
    outs = net.block_outputs(x, t)
    c = net.t_embed(t)
    torch.testing.assert_close(outs[2], net.decoder.blocks[0](outs[1], c))
    assert not hasattr(net.decoder, "t_embed") and not hasattr(net.decoder, "pos_embed")
    assert not any(p.requires_grad for p in net.encoder.norm.parameters())
    net.train()
    net(x, t).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    assert all(p.grad is None for p in net.encoder.norm.parameters())
    fresh = CondViT(SHAPE, split="dit")
    assert torch.equal(fresh.encoder.norm.weight, torch.ones(32)) and torch.equal(fresh.encoder.norm.bias,
                                                                                  torch.zeros(32))
    assert torch.equal(fresh(x, t), torch.zeros(2, 16, 16))  # DiT's zero-initialised final layer
    with pytest.raises(ByonError, match="encoder's width 32, got decoder_dim 16"):
        CondViT(SHAPE, decoder_dim=16)
    assert CondViT(SHAPE, decoder_dim=16, split="mae").decoder.embed.out_features == 16
    with pytest.raises(ByonError, match="unknown encoder–decoder split 'unet'"):
        CondViT(SHAPE, split="unet")


def test_conditioning_changes_the_output():
    net = make()
    x = torch.randn(2, 1, 16, 16)
    assert not torch.allclose(net(x, torch.tensor([1, 1])), net(x, torch.tensor([900, 900])))


@pytest.mark.parametrize("depth", [1, 2])
def test_folded_encoder_equals_the_conditioned_encoder(depth):
    net = make()
    x = torch.randn(2, 1, 16, 16)
    t, scale = 10.0, 0.7
    enc = net.folded_encoder(t, depth=depth, input_scale=scale)
    assert len(enc.blocks) == depth and enc.shape.depth == depth
    tokens, inter, _ = enc.forward_tokens(enc.embed(x), return_layers=[depth - 1])
    ref = net.block_outputs(scale * x, torch.tensor(t), upto=depth)[-1]
    torch.testing.assert_close(inter[depth - 1], ref, atol=1e-5, rtol=1e-4)
    if depth == 2:  # the whole encoder keeps its trained final norm
        torch.testing.assert_close(tokens, net.encode(scale * x, torch.tensor(t)), atol=1e-5, rtol=1e-4)
    else:  # a cut encoder ends in a parameter-free LayerNorm
        assert torch.equal(enc.norm.weight, torch.ones(32)) and torch.equal(enc.norm.bias, torch.zeros(32))


@pytest.mark.parametrize("depth", [3, 5])
def test_folded_encoder_reaches_into_the_dit_decoder_half(depth):
    net = make(decoder_depth=3)
    x = torch.randn(2, 1, 16, 16)
    t, scale = 10.0, 0.7
    enc = net.folded_encoder(t, depth=depth, input_scale=scale)
    assert len(enc.blocks) == depth and has_dit_blocks(enc)
    acts = [b.mlp.act.approximate for b in enc.blocks]
    assert acts == ["none"] * 2 + ["tanh"] * (depth - 2)  # timm's exact GELU in the encoder half, DiT's after
    _, inter, _ = enc.forward_tokens(enc.embed(x), return_layers=list(range(depth)), norm=False)
    ref = net.block_outputs(scale * x, torch.tensor(t), upto=depth)
    for k in range(depth):
        torch.testing.assert_close(inter[k], ref[k], atol=1e-5, rtol=1e-4)
    assert not has_dit_blocks(net.folded_encoder(t, depth=2))
    assert torch.equal(enc.norm.weight, torch.ones(32)) and torch.equal(enc.norm.bias, torch.zeros(32))


def test_folded_encoder_stays_in_the_network_and_leaves_the_rng_alone():
    net = make()
    with pytest.raises(ByonError, match="blocks 1…4; got 5"):
        net.folded_encoder(10.0, depth=5)
    with pytest.raises(ByonError, match="encoder half: the 'mae' split"):
        make(split="mae").folded_encoder(10.0, depth=3)
    state = torch.random.get_rng_state()
    net.folded_encoder(10.0, depth=1)
    net.folded_encoder(10.0, depth=3)
    assert torch.equal(state, torch.random.get_rng_state())
