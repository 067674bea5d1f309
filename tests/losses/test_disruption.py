import torch

from byon.losses.disruption import attention_mass, disruption_loss


def block_attention(groups: torch.Tensor, leak: float = 0.0) -> torch.Tensor:
    """(1, 1, L, L) row-stochastic attention that stays inside each token's group, plus `leak` spread evenly."""
    same = (groups[:, None] == groups[None, :]).float()
    A = same / same.sum(1, keepdim=True)
    A = (1 - leak) * A + leak / len(groups)
    return A[None, None]


def test_zero_when_no_attention_flows_between_the_groups():
    groups = torch.tensor([0, 1, 1, 2, 2, 2, 1])  # 0: CLS, 1: noised, 2: masked
    a, b = (groups == 1)[None], (groups == 2)[None]
    A = block_attention(groups)
    assert disruption_loss([A, A], a, b).item() == 0.0


def test_positive_and_hand_computed_otherwise():
    groups = torch.tensor([0, 1, 1, 2, 2, 2, 1])
    a, b = (groups == 1)[None], (groups == 2)[None]
    A = block_attention(groups, leak=0.7)  # every row puts 0.7/7 on each token besides its own group share
    # a → b: each noised query puts 3 · 0.1 on the 3 masked keys; b → a: 3 · 0.1 on the 3 noised keys
    torch.testing.assert_close(attention_mass(A, a, b), torch.tensor(0.3))
    torch.testing.assert_close(disruption_loss([A], a, b), torch.tensor(0.3))
    uniform = torch.full((1, 2, 7, 7), 1 / 7)
    torch.testing.assert_close(disruption_loss([uniform, A], a, b), torch.tensor((3 / 7 + 0.3) / 2))
    assert disruption_loss([uniform], a, b) > 0


def test_heads_queries_and_images_are_averaged_and_no_layers_give_zero():
    torch.manual_seed(0)
    A = torch.randn(3, 4, 6, 6).softmax(-1)
    a = torch.rand(3, 6) < 0.5
    b = ~a
    # per image: heads averaged per query; then the mean over every a-query of the batch
    by_hand = torch.cat([A[i, :, a[i]][..., b[i]].sum(-1).mean(0) for i in range(3)]).mean()
    torch.testing.assert_close(attention_mass(A, a, b), by_hand)
    assert disruption_loss([], a, b).item() == 0.0
    # differentiable in the attention
    A.requires_grad_(True)
    disruption_loss([A], a, b).backward()
    assert A.grad is not None and A.grad.abs().sum() > 0
