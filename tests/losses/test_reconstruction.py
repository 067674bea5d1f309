import torch

from byon.losses import masked_mse, token_mse


def test_hand_computed_token_mse():
    pred = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [5.0, 5.0]]])
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]]])
    torch.testing.assert_close(token_mse(pred, target), torch.tensor([[1.0, 2.0, 0.0]]))
    # tokens 0 and 1 selected: (1 + 2) / 2
    sel = torch.tensor([[True, True, False]])
    torch.testing.assert_close(masked_mse(pred, target, sel), torch.tensor(1.5))


def test_average_is_over_selected_tokens_of_the_whole_batch():
    pred = torch.tensor([[[1.0], [0.0]], [[2.0], [3.0]]])
    target = torch.zeros_like(pred)
    sel = torch.tensor([[True, False], [True, True]])
    torch.testing.assert_close(masked_mse(pred, target, sel), torch.tensor((1 + 4 + 9) / 3))


def test_unselected_tokens_do_not_count():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 4, generator=g)
    sel = torch.rand(2, 6, generator=g) > 0.5
    base = masked_mse(pred, target, sel)
    torch.testing.assert_close(masked_mse(pred + 50.0 * (~sel).unsqueeze(-1), target, sel), base)
    assert masked_mse(pred + 1.0 * sel.unsqueeze(-1), target, sel) != base
    assert masked_mse(pred, target, torch.zeros(2, 6, dtype=torch.bool)).item() == 0.0


def test_hand_computed_masked_l1_is_simmims_per_value_mean():
    from byon.losses import masked_l1, token_l1

    pred = torch.tensor([[[1.0, -1.0], [2.0, 0.0], [5.0, 9.0]]])
    target = torch.zeros(1, 3, 2)
    torch.testing.assert_close(token_l1(pred, target), torch.tensor([[1.0, 1.0, 7.0]]))
    sel = torch.tensor([[True, False, True]])
    # SimMIM: Σ |error| over masked values / number of masked values = (1 + 1 + 5 + 9) / 4
    torch.testing.assert_close(masked_l1(pred, target, sel), torch.tensor(4.0))
    assert masked_l1(pred, target, torch.zeros(1, 3, dtype=torch.bool)) == 0
