import math

import torch

from byon.losses import bootstrap_cosine


def test_hand_computed_cosines():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    loss, cos = bootstrap_cosine(p, z)
    torch.testing.assert_close(cos, torch.tensor([1.0, 0.0, 1 / math.sqrt(2)]))
    torch.testing.assert_close(loss, -(1 + 0 + 1 / math.sqrt(2)) / 3 * torch.ones(()))


def test_weights_scale_each_image():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # cos = [1, −1]
    loss, _ = bootstrap_cosine(p, z, torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(loss, torch.tensor(-0.25))  # mean(−1·1, −0.5·(−1))
    loss0, _ = bootstrap_cosine(p, z, torch.zeros(2))
    assert loss0.item() == 0.0


def test_gradient_reaches_only_the_online_side():
    p = torch.randn(4, 8, requires_grad=True)
    z = torch.randn(4, 8, requires_grad=True)
    w = torch.rand(4, requires_grad=True)
    loss, _ = bootstrap_cosine(p, z, w)
    loss.backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None and w.grad is None
