"""TRPO's estimator against dense references: CG vs a linear solve, the Fisher-vector product
vs the explicit Fisher matrix, the step size, and a line search that never leaves the trust
region."""
import math

import pytest
import torch
from torch.func import functional_call

torch.set_num_threads(1)

from minippo import trpo  # noqa: E402
from minippo.nets import ActorCritic  # noqa: E402


def test_conjugate_gradient_matches_dense_solve():
    g = torch.Generator().manual_seed(0)
    n = 12
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(n, dtype=torch.float64)  # SPD
    b = torch.randn(n, generator=g, dtype=torch.float64)
    x = trpo.conjugate_gradient(lambda v: A @ v, b, iters=n, tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), atol=1e-8, rtol=1e-8)
    # fewer iterations: an approximation that still reduces the residual
    x3 = trpo.conjugate_gradient(lambda v: A @ v, b, iters=3)
    assert (A @ x3 - b).norm() < b.norm()


def test_conjugate_gradient_stops_at_tolerance():
    calls = []

    def Avp(v):
        calls.append(1)
        return 2.0 * v

    x = trpo.conjugate_gradient(Avp, torch.ones(5, dtype=torch.float64), iters=10)
    torch.testing.assert_close(x, torch.full((5,), 0.5, dtype=torch.float64))
    assert len(calls) == 1  # A = 2I is solved in one step, then the residual is 0


def _small_policy(discrete: bool):
    torch.manual_seed(0)
    kw = dict(num_actions=3) if discrete else dict(action_dim=2)
    policy = ActorCritic(3, hidden=(5,), orthogonal_init=False, **kw).double()
    if not discrete:
        with torch.no_grad():
            policy.log_std.copy_(torch.tensor([-0.3, 0.2]))
    obs = torch.randn(6, 3, dtype=torch.float64)
    return policy, obs


def _mean_kl_of_flat(policy, obs):
    """f(theta) = mean_s KL(pi_old(.|s) || pi_theta(.|s)) as a function of the flat policy
    parameters, with pi_old frozen at the current parameters."""
    # the order of policy.policy_parameters(): the actor's parameters, then log_std
    names = ["actor." + n for n, _ in policy.actor.named_parameters()]
    names += [] if policy.discrete else ["log_std"]
    params = dict(policy.named_parameters())
    shapes = [params[n].shape for n in names]
    flat0 = torch.cat([params[n].detach().reshape(-1) for n in names])
    with torch.no_grad():
        old = policy.dist(obs)

    def f(flat):
        new_params, i = {}, 0
        for n, s in zip(names, shapes):
            new_params[n] = flat[i:i + s.numel()].view(s)
            i += s.numel()
        out = functional_call(policy.actor, {k[6:]: v for k, v in new_params.items()
                                             if k.startswith("actor.")}, (obs,))
        if policy.discrete:
            dist = torch.distributions.Categorical(logits=out)
        else:
            dist = torch.distributions.Independent(
                torch.distributions.Normal(out, new_params["log_std"].exp().expand_as(out)), 1)
        return torch.distributions.kl_divergence(old, dist).mean()

    return f, flat0


@pytest.mark.parametrize("discrete", [True, False])
def test_fisher_vector_product_equals_hessian_of_mean_kl(discrete):
    """F v from double backprop == H v with H the dense Hessian of the mean KL at theta_old."""
    policy, obs = _small_policy(discrete)
    f, flat0 = _mean_kl_of_flat(policy, obs)
    H = torch.autograd.functional.hessian(f, flat0)  # (P, P)
    assert H.shape[0] == sum(p.numel() for p in policy.policy_parameters())
    g = torch.Generator().manual_seed(1)
    for damping in (0.0, 0.1):
        v = torch.randn(flat0.shape[0], generator=g, dtype=torch.float64)
        fvp = trpo.fisher_vector_product(policy, obs, v, damping=damping)
        torch.testing.assert_close(fvp, H @ v + damping * v, atol=1e-10, rtol=1e-8)


def test_fisher_equals_expected_outer_product_of_score():
    """For a categorical policy the KL Hessian at theta_old is exactly the Fisher information
    (1/N) sum_s sum_a pi(a|s) grad log pi(a|s) grad log pi(a|s)^T (expectation over a exact)."""
    policy, obs = _small_policy(discrete=True)
    params = policy.policy_parameters()
    P = sum(p.numel() for p in params)
    F = torch.zeros(P, P, dtype=torch.float64)
    for s in range(obs.shape[0]):
        d = policy.dist(obs[s:s + 1])
        for a in range(3):
            logp = d.log_prob(torch.tensor([a]))[0]
            grad = torch.cat([x.reshape(-1) for x in torch.autograd.grad(logp, params,
                                                                          retain_graph=True)])
            F += d.probs[0, a].detach() * torch.outer(grad, grad)
    F /= obs.shape[0]
    eye = torch.eye(P, dtype=torch.float64)
    dense = torch.stack([trpo.fisher_vector_product(policy, obs, eye[i], damping=0.0)
                         for i in range(P)], dim=1)
    torch.testing.assert_close(dense, F, atol=1e-10, rtol=1e-8)


def test_natural_step_size_hits_the_quadratic_trust_region():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(6, 6, generator=g, dtype=torch.float64)
    F = M @ M.T + torch.eye(6, dtype=torch.float64)
    s = torch.randn(6, generator=g, dtype=torch.float64)
    beta = trpo.natural_step_size(s, F @ s, max_kl=0.01)
    step = beta * s
    torch.testing.assert_close(0.5 * step @ F @ step, torch.tensor(0.01, dtype=torch.float64))


def test_line_search_accepts_only_steps_inside_the_trust_region_that_improve():
    g = torch.tensor([1.0, 2.0], dtype=torch.float64)
    max_kl = 0.01

    def evaluate(x):  # loss = -g.x (improves along g), kl = |x|^2 + |x|^3 (not quadratic)
        n = float(x.norm())
        return float(-(g @ x)), n ** 2 + n ** 3

    x0 = torch.zeros(2, dtype=torch.float64)
    x, k = trpo.backtracking_line_search(evaluate, x0, 10.0 * g, max_kl)
    loss, kl = evaluate(x)
    assert k > 0 and kl <= max_kl and loss < 0.0
    _, kl_prev = evaluate(x0 + 0.5 ** (k - 1) * 10.0 * g)
    assert kl_prev > max_kl  # the first accepted fraction, not a smaller one

    # a step that never improves the objective is rejected: parameters stay where they were
    x, k = trpo.backtracking_line_search(evaluate, x0, -g, max_kl)
    assert k == -1 and torch.equal(x, x0)


def test_trpo_update_never_exceeds_max_kl():
    """In a short training run, the exact mean KL of every accepted step is <= delta."""
    config = trpo.TRPOConfig(num_envs=8, num_steps=64, total_steps=8 * 64 * 6, max_kl=0.005)
    _, history = trpo.train(config, seed=0, progress=False)
    assert len(history) == 6
    assert max(history["trpo/mean_kl"]) <= config.max_kl  # what the line search constrains
    assert max(history["trpo/kl_divergence"]) <= config.max_kl  # its k3 estimate, reported
    assert all(k >= 0 for k in history["trpo/backtracks"])  # it did move
    assert all(math.isfinite(x) for x in history["trpo/kl_divergence"])


@pytest.mark.parametrize("field, value, match", [
    ("max_kl", 0.0, "max_kl must be in"),
    ("cg_damping", -1.0, "cg_damping must be in"),
    ("backtrack_ratio", 1.0, "backtrack_ratio must be in"),
    ("gae_lambda", 1.5, "gae_lambda must be in"),
    ("total_steps", 10, "total_steps must be in"),
])
def test_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        trpo.TRPOConfig(**{field: value})


def test_fisher_vector_product_reuses_kl_gradient():
    policy, obs = _small_policy(discrete=True)
    g = trpo.kl_gradient(policy, obs)
    torch.testing.assert_close(g, torch.zeros_like(g), atol=1e-12, rtol=0)  # zero at theta_old
    v = torch.randn(g.shape[0], dtype=torch.float64)
    torch.testing.assert_close(trpo.fisher_vector_product(policy, obs, v, 0.1, grad_kl=g),
                               trpo.fisher_vector_product(policy, obs, v, 0.1))
