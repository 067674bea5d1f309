"""The timestep-conditioned ViT encoder–decoder (DiT-style adaLN-Zero) that l-DAE and DDAE share.

encoder: the library's `ViTEncoder` (timm layout: CLS token, fixed sin-cos positions, final LayerNorm) whose
blocks run as DiT blocks under `nn.cond.BlockModulation` — shift/scale/gate from an embedding of t, zero-
initialised, kept outside the encoder so its state dict stays timm's (MaskDiT conditions its encoder the same
way). The decoder, by `split`:
  "dit" (default): one DiT. The decoder blocks (`DiTHalf`) continue on the encoder blocks' raw tokens under the
        same embedding of t, and end in DiT's adaLN final layer and zero-initialised Linear(D → p²C). The
        encoder/decoder boundary is only where the blocks are counted from: l-DAE's DiT-L is 24 blocks whose
        first 12 it calls the encoder ("this separation ... is artificial", appendix A), and DDAE probes the
        blocks of one network. The encoder's final LayerNorm lies off the training path; it is frozen at unit
        weight and zero bias, the parameter-free norm that `encode` (the probe's encoder output) ends in.
  "mae": an MAE-style interface. The encoder's final norm, then `CondDecoder(cond="adaln")`, a light decoder
        with its own Linear(D → Dd) re-embedding, second positional embedding and t-embedder. The decoder can be
        narrower than the encoder.
With decoder_depth = the encoder's depth this is l-DAE's symmetric split.

t is whatever the method conditions on: an integer DDPM step, a fractional step, or EDM's c_noise = ln(σ)/4.
Blocks are counted 1 … encoder depth + decoder depth, shallow to deep (the probe grid's "layer").
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from byon.errors import ByonError, unknown
from byon.nn.cond import (
    AdaLNBlock,
    AdaLNFinal,
    BlockModulation,
    TimestepEmbedder,
    fold_block_modulation_,
    fold_modulation,
    modulated_block,
    modulated_blocks,
    zero_,
)
from byon.nn.decoders import CondDecoder
from byon.nn.vit import EncoderShape, ViTEncoder, init_mae_

SPLITS = ("dit", "mae")


class DiTHalf(nn.Module):
    """The blocks of a DiT after the encoder's, and DiT's final layer: forward(x (B, 1 + N, D) the raw tokens of
    the last encoder block, c (B, D) the embedding of t) → (B, N, P) per patch. adaLN-Zero modulation and the
    final Linear are zero-initialised (DiT's init), every other Linear xavier-uniform."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, patch_dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([AdaLNBlock(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = AdaLNFinal(dim)
        self.pred = nn.Linear(dim, patch_dim)
        init_mae_(self)
        for m in self.modules():  # after init_mae_, which re-initialised every Linear
            if hasattr(m, "adaLN_modulation"):
                zero_(m.adaLN_modulation[-1])
        zero_(self.pred)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x, c)
        return self.pred(self.norm(x, c))[:, 1:]


class CondViT(nn.Module):
    """forward(images (B, C, H, W), t (B,)) → per-patch predictions (B, N, p²C).

    `block_outputs` gives every block's raw output tokens (B, 1 + N, D_k) (CLS first); `encode` the
    encoder's final-normed tokens (B, 1 + N, D); `folded_encoder` a plain `ViTEncoder` equal to the
    conditioned encoder at one fixed t (for export, fine-tuning and attention analyses).
    """

    def __init__(self, shape: EncoderShape, decoder_depth: int | None = None, decoder_dim: int | None = None,
                 decoder_heads: int | None = None, split: str = "dit") -> None:
        super().__init__()
        if split not in SPLITS:
            raise unknown("encoder–decoder split", split, SPLITS)
        D = shape.embed_dim
        self.shape, self.split = shape, split
        self.encoder = ViTEncoder(shape)
        self.t_embed = TimestepEmbedder(D)
        self.modulation = BlockModulation(D, shape.depth)
        depth = shape.depth if decoder_depth is None else decoder_depth
        heads = decoder_heads or shape.num_heads
        self.decoder: nn.Module
        if split == "dit":
            if decoder_dim not in (None, D):
                raise ByonError(f"a one-stack DiT decoder has the encoder's width {D}, got decoder_dim "
                                f"{decoder_dim}; drop decoder_dim or use split 'mae' for a narrower decoder")
            self.decoder = DiTHalf(D, depth, heads, shape.mlp_ratio, shape.patch_dim)
            self.encoder.norm.requires_grad_(False)  # off the training path: the probe's parameter-free norm
        else:
            self.decoder = CondDecoder(
                D, shape.num_patches, shape.patch_dim, dim=decoder_dim or D, depth=depth, num_heads=heads,
                mlp_ratio=shape.mlp_ratio, cond="adaln", mask_token=False)

    @property
    def encoder_depth(self) -> int:
        return len(self.encoder.blocks)

    @property
    def depth(self) -> int:
        """Blocks in all, encoder then decoder."""
        return self.encoder_depth + len(self.decoder.blocks)

    def _batch_t(self, t: Tensor, B: int) -> Tensor:
        if t.dim() == 0:
            t = t.expand(B)
        return t

    def encode(self, images: Tensor, t: Tensor) -> Tensor:
        """images (B, C, H, W), t (B,) or () → the encoder's final-normed tokens (B, 1 + N, D)."""
        t = self._batch_t(t, images.shape[0])
        x = modulated_blocks(self.encoder, self.encoder.embed(images), self.modulation(self.t_embed(t)))
        return self.encoder.norm(x)

    def forward(self, images: Tensor, t: Tensor) -> Tensor:
        t = self._batch_t(t, images.shape[0])
        if self.split == "mae":
            return self.decoder(self.encode(images, t), t)
        c = self.t_embed(t)
        return self.decoder(modulated_blocks(self.encoder, self.encoder.embed(images), self.modulation(c)), c)

    def block_outputs(self, images: Tensor, t: Tensor, upto: int | None = None) -> list[Tensor]:
        """Raw outputs (before any final norm) of blocks 1 … `upto` (default all): (B, 1 + N, D_k) each.
        Runs only the blocks it needs."""
        upto = self.depth if upto is None else upto
        if not 1 <= upto <= self.depth:
            raise ByonError(f"block {upto} does not exist; the network has blocks 1…{self.depth}")
        t = self._batch_t(t, images.shape[0])
        outs: list[Tensor] = []
        x = self.encoder.embed(images)
        c = self.t_embed(t)
        for blk, mod in zip(self.encoder.blocks, self.modulation(c)):
            x = modulated_block(blk, x, mod)
            outs.append(x)
            if len(outs) == upto:
                return outs
        # the decoder's forward block by block (tests check it against forward)
        dec = self.decoder
        if self.split == "dit":
            h = x
        else:  # CondDecoder.forward without masking
            h = dec.embed(self.encoder.norm(x)) + dec.pos_embed.to(x.dtype)
            c = dec.conditioning(t, None, h.shape[0])
        c = c.to(h.dtype)
        for blk in dec.blocks:
            h = blk(h, c)
            outs.append(h)
            if len(outs) == upto:
                break
        return outs

    @torch.no_grad()
    def folded_encoder(self, t: float, depth: int | None = None, input_scale: float = 1.0) -> ViTEncoder:
        """A plain `ViTEncoder` computing the conditioned network at the fixed conditioning t on inputs times
        `input_scale`, truncated after `depth` blocks (default: the encoder's). With split "dit" the cut may lie
        in the decoder half (DDAE's best block often does): those DiT blocks fold into timm `Block`s the same
        way (adaLN shift/scale into the LayerNorm affine, gates into attn.proj and mlp.fc2) and keep their
        tanh-approximate GELU (`dit_gelu`). A truncated copy ends in a fresh LayerNorm (unit weight, zero bias)
        where a timm ViT has its final norm; the full encoder keeps the trained norm (with split "dit", the
        frozen parameter-free one). A fresh copy: later training does not change it."""
        depth = self.encoder_depth if depth is None else depth
        reach = self.depth if self.split == "dit" else self.encoder_depth
        if not 1 <= depth <= reach:
            where = ("" if self.split == "dit" else
                     " (the encoder half: the 'mae' split re-embeds into its decoder, which is no ViT)")
            raise ByonError(f"a plain encoder can be cut after blocks 1…{reach}{where}; got {depth}")
        device = self.encoder.cls_token.device
        c = self.t_embed(torch.tensor([float(t)], device=device))
        folded = fold_modulation(self.encoder, self.modulation, c, input_scale=input_scale)
        if depth == self.encoder_depth:
            return folded.eval()
        with torch.random.fork_rng(devices=[]):  # building the shell must not move the global RNG
            enc = ViTEncoder(dataclasses.replace(self.shape, depth=depth)).to(device)
        state = {k: v for k, v in folded.state_dict().items() if not k.startswith(("blocks.", "norm."))
                 or (k.startswith("blocks.") and int(k.split(".")[1]) < depth)}
        dit_blocks = list(enumerate(self.decoder.blocks[:max(0, depth - self.encoder_depth)], self.encoder_depth))
        for j, blk in dit_blocks:  # a DiT block's weights, and the identity affine its LayerNorms lack
            state |= {f"blocks.{j}.{k}": v for k, v in blk.state_dict().items() if not k.startswith("adaLN_")}
            state |= {f"blocks.{j}.{n}.{p}": init(c[0]) for n in ("norm1", "norm2")
                      for p, init in (("weight", torch.ones_like), ("bias", torch.zeros_like))}
        missing, unexpected = enc.load_state_dict(state, strict=False)
        assert not unexpected and all(k.startswith("norm.") for k in missing), (missing, unexpected)
        for j, blk in dit_blocks:
            fold_block_modulation_(enc.blocks[j], blk.adaLN_modulation(c)[0])
            enc.blocks[j].mlp.act = dit_gelu()
        return enc.eval()


def dit_gelu() -> nn.GELU:
    """The activation of DiT blocks (`AdaLNBlock`): GELU's tanh approximation (timm's exact GELU elsewhere)."""
    return nn.GELU(approximate="tanh")


def has_dit_blocks(encoder: nn.Module) -> bool:
    """Whether a folded encoder holds DiT blocks (tanh GELU), which a timm `VisionTransformer` — one
    activation for every block — cannot be built with."""
    return any(getattr(getattr(b.mlp, "act", None), "approximate", "none") == "tanh" for b in encoder.blocks)


__all__ = ["SPLITS", "CondViT", "DiTHalf", "dit_gelu", "has_dit_blocks"]
