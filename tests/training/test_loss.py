"""The pre-training loss with per-token weights (method=loss_mask): masked tokens carry no cross-entropy,
the unlikelihood term is -log(1 - p) on them, and weights of ones change nothing."""

import torch
import torch.nn.functional as F

from detox.training.loss import lm_loss


def test_weighted_loss_masks_tokens_and_adds_unlikelihood():
    torch.manual_seed(0)
    hidden, weight = torch.randn(2, 5, 8), torch.randn(11, 8)
    targets = torch.randint(0, 11, (2, 5))
    mask = torch.zeros(2, 5)
    mask[0, 1:3] = 1
    mask[1, 4] = 1
    per_token = F.cross_entropy((hidden @ weight.T).flatten(0, 1), targets.flatten(), reduction="none")
    ce, loss = lm_loss(hidden, weight, targets, weights=(1 - mask, torch.zeros_like(mask)))
    kept = mask.flatten() == 0
    torch.testing.assert_close(ce, per_token[kept].mean())
    torch.testing.assert_close(loss, ce)
    ce_all, loss_all = lm_loss(hidden, weight, targets, weights=(torch.ones_like(mask), torch.zeros_like(mask)))
    torch.testing.assert_close(ce_all, lm_loss(hidden, weight, targets)[0])
    _, with_ul = lm_loss(hidden, weight, targets, weights=(1 - mask, 2.0 * mask))
    p = torch.exp(-per_token[~kept])
    torch.testing.assert_close(with_ul, ce + 2.0 * (-torch.log1p(-p)).mean())
    weight.requires_grad_(True)
    lm_loss(hidden, weight, targets, weights=(1 - mask, 2.0 * mask))[1].backward()  # differentiable
    assert weight.grad is not None and torch.isfinite(weight.grad).all()


def test_the_chunked_weighted_loss_matches_the_unchunked_one_with_its_gradients():
    torch.manual_seed(1)
    hidden, weight = torch.randn(2, 7, 8, requires_grad=True), torch.randn(13, 8, requires_grad=True)
    targets = torch.randint(0, 13, (2, 7))
    mask = (torch.rand(2, 7) < 0.3).float()
    results = []
    for chunk in (0, 3):
        hidden.grad = weight.grad = None
        ce, loss = lm_loss(hidden, weight, targets, chunk, z_loss=1e-2, weights=(1 - mask, 0.7 * mask))
        loss.backward()
        results.append((ce.detach(), loss.detach(), hidden.grad.clone(), weight.grad.clone()))
    for unchunked, chunked in zip(*results):
        torch.testing.assert_close(chunked, unchunked, rtol=1e-5, atol=1e-6)
