import math

import pytest
import torch
from torch import nn

from byon.engine.optim import cosine_schedule, param_groups, warmup_cosine
from byon.methods.mae import MAE
from byon.nn.ema import cosine_momentum, ema_update, linear_momentum, make_target


def test_warmup_then_half_cosine():
    assert warmup_cosine(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


def test_weight_decay_cosine_endpoints():
    assert cosine_schedule(0, 50, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine_schedule(50, 50, 0.04, 0.4) == pytest.approx(0.4)


def test_no_decay_on_biases_norms_and_tokens():
    from byon.data import DataInfo
    from byon.methods import load_config
    from byon.nn.vit import resolve_shape

    cfg = load_config(None, {"method": "mae", "model": {"preset": "vit-test"}})
    mae = MAE(cfg.method_cfg, resolve_shape(cfg.model, 28, 1), DataInfo("s", 28, 1, 10, (0.5,), (0.5,)))
    decay, no_decay = param_groups(mae, 0.05)
    ids = {id(p) for p in no_decay["params"]}
    named = dict(mae.named_parameters())
    assert id(named["encoder.cls_token"]) in ids and id(named["decoder.mask_token"]) in ids
    assert id(named["encoder.blocks.0.norm1.weight"]) in ids and id(named["encoder.blocks.0.attn.qkv.bias"]) in ids
    assert id(named["encoder.blocks.0.attn.qkv.weight"]) not in ids
    assert "encoder.pos_embed" not in {n for n, p in named.items() if id(p) in ids}  # frozen: in no group
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_momentum_schedules_endpoints():
    assert cosine_momentum(0.99, 1.0, 0.0) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 1.0, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.99, 1.0, 0.5) == pytest.approx(0.995)
    assert linear_momentum(0.996, 1.0, 0.5) == pytest.approx(0.998)


def test_ema_update_is_a_lerp_and_copies_buffers():
    online = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    target = make_target(online)
    assert not any(p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
        online[1].running_mean.fill_(3.0)
    before = [p.clone() for p in target.parameters()]
    ema_update([(online, target)], 0.9)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    assert torch.equal(target[1].running_mean, torch.full((2,), 3.0))
    assert math.isclose(cosine_momentum(0.5, 1.0, 2.0), 1.0)
