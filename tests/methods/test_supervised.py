import pytest
import torch
import torch.nn.functional as F

from byon.config import load_config
from byon.engine.context import DataInfo, StepContext
from byon.errors import ByonError
from byon.methods.supervised import Supervised
from byon.nn.vit import resolve_shape

INFO = DataInfo(name="synthetic", img_size=28, in_chans=1, num_classes=10, mean=(0.5,), std=(0.25,))


def make(info: DataInfo = INFO, **sup) -> Supervised:
    cfg = load_config(None, {"method": "supervised", "model": {"preset": "vit-test"}, "supervised": sup})
    torch.manual_seed(0)
    return Supervised(cfg.method_cfg, resolve_shape(cfg.model, 28, 1), info)


def test_loss_is_smoothed_cross_entropy_of_the_cls_head():
    m = make(label_smoothing=0.1)
    images, labels = torch.randn(6, 1, 28, 28), torch.arange(6) % 10
    out = m({"image": images, "label": labels}, StepContext(generator=torch.Generator()))
    logits = m.head(m.encoder.features(images)["cls"])
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits, labels, label_smoothing=0.1))
    out["loss"].backward()
    assert m.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_a_few_steps_fit_a_fixed_batch():
    m = make(label_smoothing=0.0)
    images, labels = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = m({"image": images, "label": labels}, StepContext(generator=torch.Generator()))["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_unlabelled_data_and_bad_settings_are_one_line_errors():
    with pytest.raises(ByonError, match="needs labels"):
        make(DataInfo(name="imagefolder", img_size=28, in_chans=1, num_classes=0, mean=(0.5,), std=(0.25,)))
    with pytest.raises(ByonError, match="pool"):
        make(pool="max")
