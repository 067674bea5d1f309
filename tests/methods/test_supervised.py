import pytest
import torch
import torch.nn.functional as F

from byon.data import DataInfo
from byon.errors import ByonError
from byon.methods.context import StepContext
from byon.methods.supervised import Supervised

from .common import INFO, assert_trains_every_parameter, make_method


def make(info: DataInfo = INFO, **sup) -> Supervised:
    return make_method("supervised", info=info, **sup)


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
    losses = assert_trains_every_parameter(m, lambda: {"image": images, "label": labels}, steps=40, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0]


def test_unlabelled_data_and_bad_settings_are_one_line_errors():
    with pytest.raises(ByonError, match="needs labels"):
        make(DataInfo(name="imagefolder", img_size=28, in_chans=1, num_classes=0, mean=(0.5,), std=(0.25,)))
    with pytest.raises(ByonError, match="pool"):
        make(pool="max")
