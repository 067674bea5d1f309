import torch

from byon.losses.pca_weighted import component_weights, pca_weighted_mse


def test_component_weights():
    torch.testing.assert_close(component_weights(5, 2, 0.1), torch.tensor([1.0, 1.0, 0.1, 0.1, 0.1]))


def test_loss_by_hand_in_a_rotated_basis():
    # V rotates the plane; residue x − x̂ = (1, 2) → r = V·(1, 2) = (2, −1), weights w = (1, 0.1)
    V = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    target = torch.tensor([[[1.0, 2.0]]])  # (B=1, N=1, P=2)
    pred = torch.zeros_like(target)
    w = torch.tensor([1.0, 0.1])
    # r = (2, −1): (1·4 + 0.1·1) / P=2 = 2.05
    torch.testing.assert_close(pca_weighted_mse(pred, target, V, w), torch.tensor(2.05))
    lam = torch.tensor([0.5])
    torch.testing.assert_close(pca_weighted_mse(pred, target, V, w, lam), torch.tensor(1.025))


def test_unit_weights_give_the_plain_mse_and_lambda_is_per_image():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 4, 6, generator=g), torch.randn(3, 4, 6, generator=g)
    V = torch.linalg.qr(torch.randn(6, 6, generator=g))[0].T
    torch.testing.assert_close(pca_weighted_mse(pred, target, V, torch.ones(6)), (pred - target).pow(2).mean())
    lam = torch.tensor([1.0, 0.0, 2.0])
    per = (pred - target).pow(2).mean(dim=(1, 2))
    torch.testing.assert_close(pca_weighted_mse(pred, target, V, torch.ones(6), lam), (lam * per).mean())
