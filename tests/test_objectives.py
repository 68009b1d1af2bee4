"""Losses and estimators against autograd, exact KLs and hand-computed cases."""
import math

import pytest
import torch
import torch.nn.functional as F

torch.set_num_threads(1)

from minippo.objectives import (  # noqa: E402
    clip_fraction,
    clipped_surrogate,
    clipped_value_loss,
    entropy_bonus,
    explained_variance,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_penalty_surrogate,
    masked_mean,
    policy_gradient_loss,
    probability_ratio,
    value_loss,
)


def small_policy_batch(seed=0, N=32, O=3, A=4):
    g = torch.Generator().manual_seed(seed)
    policy = torch.nn.Linear(O, A)
    with torch.no_grad():
        policy.weight.copy_(torch.randn(A, O, generator=g))
        policy.bias.copy_(torch.randn(A, generator=g))
    obs = torch.randn(N, O, generator=g)
    actions = torch.randint(0, A, (N,), generator=g)
    adv = torch.randn(N, generator=g)
    return policy, obs, actions, adv


def log_prob(policy, obs, actions):
    return torch.log_softmax(policy(obs), -1).gather(1, actions[:, None]).squeeze(1)  # (N,)


def grads(loss, module):
    return torch.autograd.grad(loss, list(module.parameters()))


def test_clipped_surrogate_gradient_at_ratio_one_is_policy_gradient():
    policy, obs, actions, adv = small_policy_batch()
    logp = log_prob(policy, obs, actions)
    g_clip = grads(clipped_surrogate(logp, logp.detach(), adv, 0.2), policy)
    logp = log_prob(policy, obs, actions)
    g_pg = grads(policy_gradient_loss(logp, adv), policy)
    for a, b in zip(g_clip, g_pg):
        torch.testing.assert_close(a, b)
    # the KL-penalty surrogate too: the KL's gradient vanishes at ratio 1
    logp = log_prob(policy, obs, actions)
    g_kl = grads(kl_penalty_surrogate(logp, logp.detach(), adv, beta=3.0), policy)
    for a, b in zip(g_kl, g_pg):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("adv_sign,log_ratio,clipped", [
    (+1.0, math.log(1.5), True),    # A > 0, r above 1 + eps: no more reward, gradient 0
    (+1.0, math.log(0.5), False),   # A > 0, r below 1 - eps: still pushed up
    (-1.0, math.log(0.5), True),    # A < 0, r below 1 - eps: no more reward, gradient 0
    (-1.0, math.log(1.5), False),   # A < 0, r above 1 + eps: still pushed down
    (+1.0, math.log(1.1), False),   # inside the clip range: plain ratio gradient
    (-1.0, math.log(0.9), False),
])
def test_clipped_surrogate_gradient_in_the_four_regions(adv_sign, log_ratio, clipped):
    eps, N = 0.2, 5
    adv = adv_sign * torch.linspace(0.5, 2.0, N)
    logp_old = torch.full((N,), -1.0)
    logp = (logp_old + log_ratio).requires_grad_(True)
    loss = clipped_surrogate(logp, logp_old, adv, eps)
    (grad,) = torch.autograd.grad(loss, logp)
    ratio = math.exp(log_ratio)
    expected = torch.zeros(N) if clipped else -adv * ratio / N  # d(-mean(r A))/d logp = -r A / N
    torch.testing.assert_close(grad, expected)
    # the value: the pessimistic min of the two surrogates
    clipped_r = min(max(ratio, 1 - eps), 1 + eps)
    assert loss.item() == pytest.approx(-torch.minimum(ratio * adv, clipped_r * adv).mean().item(),
                                        rel=1e-6)


def test_clipped_surrogate_without_clipping_and_with_mask():
    g = torch.Generator().manual_seed(1)
    logp_old, logp, adv = (torch.randn(3, 6, generator=g) for _ in range(3))
    ratio = probability_ratio(logp, logp_old)
    torch.testing.assert_close(ratio, logp.exp() / logp_old.exp())
    unclipped = -(ratio * adv).mean()
    torch.testing.assert_close(clipped_surrogate(logp, logp_old, adv, None), unclipped)
    torch.testing.assert_close(clipped_surrogate(logp, logp_old, adv, float("inf")), unclipped)
    mask = torch.rand(3, 6, generator=g) < 0.5
    torch.testing.assert_close(clipped_surrogate(logp, logp_old, adv, 0.2, mask=mask),
                               clipped_surrogate(logp[mask], logp_old[mask], adv[mask], 0.2))
    with pytest.raises(ValueError, match="clip_eps must be in"):
        clipped_surrogate(logp, logp_old, adv, 2.0)
    with pytest.raises(ValueError, match="adv"):
        clipped_surrogate(logp, logp_old, adv[:, :2], 0.2)


def test_kl_penalty_surrogate_formula():
    g = torch.Generator().manual_seed(2)
    logp_old, logp, adv = (torch.randn(10, generator=g) for _ in range(3))
    r = torch.exp(logp - logp_old)
    kl = torch.rand(10, generator=g)
    torch.testing.assert_close(kl_penalty_surrogate(logp, logp_old, adv, 0.5, kl),
                               -((r * adv).mean() - 0.5 * kl.mean()))
    default = -((r * adv).mean() - 0.5 * kl_k3(logp_old, logp).mean())
    torch.testing.assert_close(kl_penalty_surrogate(logp, logp_old, adv, 0.5), default)


def two_categoricals():
    q = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    p = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    return q, p


def kl_samples(q, p, n=200_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.multinomial(q, n, replacement=True, generator=g)
    return q.log()[x], p.log()[x]


@pytest.mark.parametrize("estimator", [kl_k1, kl_k3])
def test_k1_and_k3_are_unbiased(estimator):
    q, p = two_categoricals()
    exact = (q * (q / p).log()).sum().item()  # KL(q || p)
    k = estimator(*kl_samples(q, p))
    se = (k.std() / math.sqrt(k.numel())).item()
    assert abs(k.mean().item() - exact) < 4 * se
    # direction: samples from q estimate KL(q || p), not KL(p || q)
    q2 = torch.tensor([0.05, 0.05, 0.1, 0.8], dtype=torch.float64)
    exact2 = (q2 * (q2 / p).log()).sum().item()
    reverse2 = (p * (p / q2).log()).sum().item()
    k2 = estimator(*kl_samples(q2, p, seed=1))
    se2 = (k2.std() / math.sqrt(k2.numel())).item()
    assert abs(k2.mean().item() - exact2) < 4 * se2 < abs(k2.mean().item() - reverse2)


def test_k3_never_negative_and_k1_sometimes_is():
    g = torch.Generator().manual_seed(3)
    logp_q, logp_p = 5 * torch.randn(10_000, generator=g), 5 * torch.randn(10_000, generator=g)
    assert (kl_k3(logp_q, logp_p) >= 0).all()
    assert (kl_k2(logp_q, logp_p) >= 0).all()
    assert (kl_k1(logp_q, logp_p) < 0).any()
    torch.testing.assert_close(kl_k3(logp_q, logp_q), torch.zeros(10_000))


def test_k2_is_close_but_biased():
    p = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    near = torch.tensor([0.38, 0.31, 0.2, 0.11], dtype=torch.float64)
    exact_near = (near * (near / p).log()).sum().item()
    k2 = kl_k2(*kl_samples(near, p))
    assert k2.mean().item() == pytest.approx(exact_near, rel=0.05)
    q, _ = two_categoricals()  # far apart: the bias is many standard errors
    exact = (q * (q / p).log()).sum().item()
    k2 = kl_k2(*kl_samples(q, p))
    expectation = (q * 0.5 * (p / q).log() ** 2).sum().item()  # what k2 really estimates
    assert abs(expectation - exact) > 0.05
    se = (k2.std() / math.sqrt(k2.numel())).item()
    assert abs(k2.mean().item() - expectation) < 4 * se < abs(k2.mean().item() - exact)


def test_explained_variance():
    g = torch.Generator().manual_seed(4)
    ret = 3 * torch.randn(100, generator=g)
    assert explained_variance(ret.clone(), ret) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(ret, ret.mean().item()), ret) == pytest.approx(
        0.0, abs=1e-6)
    assert math.isnan(explained_variance(ret, torch.ones(100)))
    v = ret + torch.randn(100, generator=g)
    expected = 1 - (ret - v).var(unbiased=False) / ret.var(unbiased=False)
    assert explained_variance(v, ret) == pytest.approx(expected.item(), rel=1e-5)
    assert explained_variance(-ret, ret) < 0
    assert isinstance(explained_variance(v, ret), float)


def test_value_losses():
    g = torch.Generator().manual_seed(5)
    v, ret = torch.randn(20, generator=g), torch.randn(20, generator=g)
    torch.testing.assert_close(value_loss(v, ret), 0.5 * F.mse_loss(v, ret))
    # hand-computed: v_clipped = v_old + clip(v - v_old, -0.2, 0.2) = [0.2, -0.1, 0.8]
    v = torch.tensor([0.5, -0.1, 0.7])
    v_old = torch.tensor([0.0, 0.0, 1.0])
    ret = torch.tensor([1.0, 1.0, 0.0])
    per_sample_max = [max(0.5 ** 2, 0.8 ** 2), max(1.1 ** 2, 1.1 ** 2), max(0.7 ** 2, 0.8 ** 2)]
    expected = 0.5 * sum(per_sample_max) / 3
    assert clipped_value_loss(v, v_old, ret, 0.2).item() == pytest.approx(expected, rel=1e-6)
    # with a huge clip range it is the plain value loss
    torch.testing.assert_close(clipped_value_loss(v, v_old, ret, 100.0), value_loss(v, ret))


def test_masked_mean_entropy_and_clip_fraction():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 7, generator=g)
    mask = torch.rand(4, 7, generator=g) < 0.6
    mask[:, 0] = True
    torch.testing.assert_close(masked_mean(x, mask), x[mask].mean())
    per_row = torch.stack([x[b][mask[b]].mean() for b in range(4)])
    torch.testing.assert_close(masked_mean(x, mask, dim=1), per_row)
    torch.testing.assert_close(masked_mean(x, None), x.mean())
    torch.testing.assert_close(entropy_bonus(x, mask=mask), x[mask].mean())
    ratio = torch.tensor([0.7, 0.85, 1.0, 1.19, 1.25, 2.0])
    assert clip_fraction(ratio, 0.2).item() == pytest.approx(3 / 6)
    assert clip_fraction(ratio, 0.1).item() == pytest.approx(5 / 6)


def test_masked_mean_ignores_inf_outside_the_mask():
    """A huge value on a padded position must not turn the masked mean into NaN."""
    x = torch.tensor([[1.0, 3.0, float("inf")], [2.0, float("nan"), 5.0]])
    mask = torch.tensor([[True, True, False], [True, False, True]])
    assert masked_mean(x, mask).item() == (1.0 + 3.0 + 2.0 + 5.0) / 4
    assert torch.equal(masked_mean(x, mask, dim=1), torch.tensor([2.0, 3.5]))


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("loss", ["clipped_surrogate", "kl_penalty_surrogate", "policy_gradient_loss"])
def test_policy_losses_refuse_an_empty_batch(loss):
    import minippo.objectives as obj

    empty = torch.zeros(0)
    args = {"clipped_surrogate": (empty, empty, empty, 0.2),
            "kl_penalty_surrogate": (empty, empty, empty, 1.0),
            "policy_gradient_loss": (empty, empty)}[loss]
    with pytest.raises(ValueError, match=r"logp is empty \(shape \(0,\)\): a loss needs at least one"):
        getattr(obj, loss)(*args)


def test_objectives_name_an_argument_that_is_not_a_tensor():
    import numpy as np

    from minippo.objectives import kl_k3, policy_gradient_loss

    with pytest.raises(TypeError, match=r"logp must be a torch.Tensor, got ndarray"):
        policy_gradient_loss(np.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match=r"logp_p must be a torch.Tensor, got list"):
        kl_k3(torch.zeros(3), [0.0, 0.0, 0.0])


def test_losses_refuse_a_mask_that_selects_nothing():
    x = torch.randn(2, 3)
    nothing = torch.zeros(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="mask selects no entries"):
        clipped_surrogate(x, x, x, 0.2, mask=nothing)
    with pytest.raises(ValueError, match="mask selects no entries"):
        value_loss(x, x, mask=nothing)


def test_update_diagnostics_on_tokens_matches_flat_samples():
    """Masked (B, L) tokens give the same numbers as the flat valid samples."""
    from minippo.objectives import update_diagnostics

    g = torch.Generator().manual_seed(0)
    logp_old, logp, ent, v, ret = (torch.randn(3, 5, generator=g) for _ in range(5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    tokens = update_diagnostics(logp_old, logp, ent, v, ret, 0.2, mask=mask)
    flat = update_diagnostics(logp_old[mask], logp[mask], ent[mask], v[mask], ret[mask], 0.2)
    assert tokens.keys() == flat.keys() == {"kl_divergence", "clip_fraction", "ratio_mean",
                                            "ratio_std", "entropy", "explained_variance",
                                            "value_pred_mean"}
    for name in tokens:
        assert tokens[name] == pytest.approx(flat[name], rel=1e-6), name
