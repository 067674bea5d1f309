import pytest
import torch
from torch import nn

from byon.errors import ByonError
from byon.nn.heads import MLPHead


def test_structure_is_linear_bn_relu_linear():
    h = MLPHead(32, 64, 16)
    kinds = [type(m) for m in h.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (h.net[0].in_features, h.net[0].out_features, h.net[3].out_features) == (32, 64, 16)
    assert h(torch.randn(5, 32)).shape == (5, 16)


def test_bn_normalises_the_hidden_layer_with_batch_statistics():
    h = MLPHead(8, 16, 4).train()
    hidden = h.net[1](h.net[0](torch.randn(64, 8) * 5 + 3))
    torch.testing.assert_close(hidden.mean(0), torch.zeros(16), atol=1e-5, rtol=0)


def test_other_norms_and_bad_norm():
    assert isinstance(MLPHead(8, 16, 4, norm="ln").net[1], nn.LayerNorm)
    assert isinstance(MLPHead(8, 16, 4, norm="none").net[1], nn.Identity)
    assert MLPHead(8, 16, 4, norm="none")(torch.randn(1, 8)).shape == (1, 4)  # B = 1 is fine without BN
    with pytest.raises(ByonError):
        MLPHead(8, 16, 4, norm="batch")
