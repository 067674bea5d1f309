"""Where the encoder looks: mean attention distance per head and layer (BYON figure 1, after Dosovitskiy et al.
2021 figure 7), and the last layer's CLS→patch attention maps (BYON figures 5 and 10, after DINO)."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from byon.analysis.common import check_rows, imshow_image, load_sample, new_figure, output_paths, save
from byon.nn.vit import ViTEncoder, attention_weights


def patch_centres(grid_size: int, patch_size: int) -> Tensor:
    """(N, 2) pixel coordinates (x, y) of the N = grid² patch centres, row-major like the encoder's tokens."""
    c = (torch.arange(grid_size, dtype=torch.float32) + 0.5) * patch_size
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


def mean_attention_distance(attn: Tensor, grid_size: int, patch_size: int) -> Tensor:
    """Mean attention distance per head, in pixels. attn: (B, H, N, N) query→key weights among the N = grid²
    patch tokens (row-major) → (H,).

    Convention: each query row is renormalised to sum to 1 over the patch keys (so the patch-to-patch block of
    an attention matrix that includes CLS can be passed as it is; CLS is neither query nor key); the distance
    of a query is Σ_k a_qk·‖c_q − c_k‖ between patch centres c, and the result is its mean over queries and
    images. Attention to oneself is distance 0; the largest possible value is (grid − 1)·√2·patch_size.
    """
    B, H, N, M = attn.shape
    if not N == M == grid_size**2:
        raise ValueError(f"attention over {grid_size}² = {grid_size**2} patches must be (B, H, N, N), "
                         f"got {tuple(attn.shape)}")
    c = patch_centres(grid_size, patch_size).to(attn.device, torch.float64)
    dist = torch.cdist(c, c)  # (N, N)
    a = attn.to(torch.float64)
    a = a / a.sum(dim=-1, keepdim=True)
    return (a * dist).sum(dim=-1).mean(dim=(0, 2)).float()


def block_attention(encoder: ViTEncoder, images: Tensor, layers: Collection[int] | None = None
                    ) -> Iterator[tuple[int, Tensor]]:
    """(block index, attention (B, H, P + N, P + N) inside that block) of the encoder on normalised images
    (B, C, H, W), for each block in `layers` (default all); the first P = `encoder.num_prefix_tokens` tokens
    are CLS (P = 1, or 0 for encoders without one)."""
    x = encoder.embed(images)
    for i, blk in enumerate(encoder.blocks):
        if layers is None or i in layers:
            yield i, attention_weights(blk, x)
        x = blk(x)


# --- attention distance ------------------------------------------------------------------------------------


def attention_distance(run_dir: str | Path, n: int = 256, batch_size: int = 64, out: str | Path | None = None,
                       dataset: str | None = None, split: str = "test", root: str | None = None, seed: int = 0,
                       device: str | None = None) -> dict[str, Any]:
    """Mean attention distance (pixels) of every head of every block, over n images of the split; see
    `mean_attention_distance` for the convention. The JSON holds it per layer with the head-diversity statistic
    `std_over_heads` (population std of the heads' distances) and the distance uniform attention would give."""
    s = load_sample(run_dir, n, dataset, split, root, seed, device)
    enc = s.method.eval_encoder()
    grid, p, p0 = enc.shape.grid, enc.shape.patch_size, enc.num_prefix_tokens
    total = torch.zeros(enc.shape.depth, enc.shape.num_heads, dtype=torch.float64)
    with torch.inference_mode():
        for raw in s.batches(batch_size):
            for i, attn in block_attention(enc, s.normalized(raw)):
                total[i] += mean_attention_distance(attn[:, :, p0:, p0:], grid, p).double().cpu() * len(raw)
    dist = (total / len(s.images)).float()  # (depth, heads)
    N = grid**2
    uniform = float(mean_attention_distance(torch.ones(1, 1, N, N), grid, p)[0])
    layers = [{"layer": i + 1, "heads": [round(float(d), 4) for d in row], "mean": float(row.mean()),
               "std_over_heads": float(row.std(unbiased=False)), "min": float(row.min()), "max": float(row.max())}
              for i, row in enumerate(dist)]
    result = s.header("attention-distance") | {
        "convention": "pixels between query and key patch centres, weighted by the query's attention; CLS "
                      "excluded as query and key, each query's patch attention renormalised to sum 1; mean over "
                      "query patches and images",
        "img_size": enc.shape.img_size, "patch_size": p, "grid": grid, "num_heads": enc.shape.num_heads,
        "max_possible": (grid - 1) * math.sqrt(2) * p, "uniform_attention": uniform, "layers": layers,
    }
    fig = new_figure(max(4.5, 0.45 * len(layers) + 2), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for li in layers:
        ax.scatter([li["layer"]] * len(li["heads"]), li["heads"], s=14, color="tab:blue", alpha=0.5, lw=0)
    ax.scatter([li["layer"] for li in layers], [li["mean"] for li in layers], s=28, color="navy",
               label="mean over heads")
    ax.axhline(uniform, color="grey", lw=1, ls="--", label="uniform attention")
    ax.set_xticks([li["layer"] for li in layers])
    ax.set_xlabel("layer (block)")
    ax.set_ylabel("mean attention distance (px)")
    ax.set_ylim(0, None)
    ax.set_title(f"{s.cfg.method}: attention distance per head ({s.dataset} {split}, n={len(s.images)})", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    png, js = output_paths(s.run_dir, "attention-distance", out)
    result = save(fig, png, result, js)
    result["summary"] = "mean distance per layer (px): " + " ".join(f"{li['mean']:.1f}" for li in layers)
    return result


# --- attention maps ----------------------------------------------------------------------------------------


def attention_maps(run_dir: str | Path, n: int = 8, out: str | Path | None = None, dataset: str | None = None,
                   split: str = "test", root: str | None = None, seed: int = 0,
                   device: str | None = None) -> dict[str, Any]:
    """The last block's CLS→patch attention per head and averaged over heads, for n images, drawn over each
    image (each map min-max scaled for display). The CLS query's weights over patches are renormalised to sum 1;
    the JSON holds, per head, the attention CLS keeps on itself and the normalised entropy of its patch
    distribution (1 = uniform, 0 = one patch), plus every image's head-averaged map. Encoders without a CLS
    token (I-JEPA) show the attention each patch receives, averaged over the patch queries. n ≤ 64 (one figure)."""
    check_rows(n)
    s = load_sample(run_dir, n, dataset, split, root, seed, device)
    enc = s.method.eval_encoder()
    grid, last, has_cls = enc.shape.grid, enc.shape.depth - 1, enc.num_prefix_tokens == 1
    with torch.inference_mode():
        x = s.normalized(s.images)
        attn = dict(block_attention(enc, x, layers={last}))[last].float().cpu()  # (n, H, P + N, P + N)
    if has_cls:
        cls_self = attn[:, :, 0, 0]  # (n, H)
        maps = attn[:, :, 0, 1:]
        maps = maps / maps.sum(dim=-1, keepdim=True)  # (n, H, N)
    else:
        maps = attn.mean(dim=2)
    entropy = -(maps * maps.clamp_min(1e-12).log()).sum(-1) / math.log(maps.shape[-1])  # (n, H)
    mean_map = maps.mean(dim=1)  # (n, N)
    H = maps.shape[1]
    query = "CLS" if has_cls else "mean over patch queries (no CLS token)"
    result = s.header("attention-maps") | {
        "layer": last + 1, "grid": grid, "num_heads": H, "query": query,
        "heads": [{"head": h + 1, "entropy": float(entropy[:, h].mean())}
                  | ({"cls_self": float(cls_self[:, h].mean())} if has_cls else {}) for h in range(H)],
        "mean_map": [[[round(float(v), 5) for v in row] for row in m.view(grid, grid)] for m in mean_map],
    }
    images = s.to_display(x)
    size = enc.shape.img_size
    cols = 2 + H
    fig = new_figure(1.25 * cols, 1.3 * len(images) + 0.3)
    for r, img in enumerate(images):
        panels = [None, mean_map[r]] + [maps[r, h] for h in range(H)]
        for c, m in enumerate(panels):
            ax = fig.add_subplot(len(images), cols, r * cols + c + 1)
            imshow_image(ax, img)
            if m is not None:
                m = m.view(grid, grid)
                m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-12)
                ax.imshow(m.numpy(), cmap="inferno", alpha=0.6, extent=(-0.5, size - 0.5, size - 0.5, -0.5),
                          interpolation="bilinear")
            if r == 0:
                ax.set_title("input" if c == 0 else "mean" if c == 1 else f"head {c - 1}", fontsize=7)
    fig.suptitle(f"{s.cfg.method}: {'CLS attention' if has_cls else 'attention received (no CLS)'}, last layer "
                 f"({s.dataset} {split})", fontsize=8)
    fig.tight_layout()
    png, js = output_paths(s.run_dir, "attention-maps", out)
    result = save(fig, png, result, js)
    result["summary"] = f"{'CLS' if has_cls else 'received'} attention entropy per head: " + " ".join(
        f"{h['entropy']:.2f}" for h in result["heads"])
    return result


__all__ = ["attention_distance", "attention_maps", "block_attention", "mean_attention_distance", "patch_centres"]
