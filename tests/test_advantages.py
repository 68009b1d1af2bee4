"""Returns and advantages against naive loops written straight from the definitions."""
import pytest
import torch

torch.set_num_threads(1)

from minippo.advantages import (  # noqa: E402
    discounted_returns,
    gae,
    lambda_returns,
    n_step_returns,
    next_step_values,
    reward_to_go,
    td_residuals,
    whiten,
)


def random_rollout(seed, T=12, B=5, p_term=0.15, p_trunc=0.15, dtype=torch.float64):
    """A rollout that honours minippo.rollout's next_values contract."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, B, generator=g, dtype=dtype)
    values = torch.randn(T, B, generator=g, dtype=dtype)
    terminated = torch.rand(T, B, generator=g) < p_term
    truncated = (torch.rand(T, B, generator=g) < p_trunc) & ~terminated
    next_values = torch.cat([values[1:], torch.randn(1, B, generator=g, dtype=dtype)])
    final_values = torch.randn(T, B, generator=g, dtype=dtype)  # V(final_obs) at truncations
    next_values = torch.where(truncated, final_values, next_values)
    next_values = torch.where(terminated, torch.zeros((), dtype=dtype), next_values)
    return rewards, values, next_values, terminated, truncated


def naive_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, summed until the episode or the rollout ends."""
    T, B = rewards.shape
    adv = torch.zeros_like(rewards)
    for b in range(B):
        for t in range(T):
            total = 0.0
            for l in range(T - t):
                k = t + l
                delta = (rewards[k, b] + gamma * (0.0 if terminated[k, b] else 1.0)
                         * next_values[k, b] - values[k, b])
                total += (gamma * lam) ** l * delta
                if terminated[k, b] or truncated[k, b]:
                    break
            adv[t, b] = total
    return adv


def naive_mc_return(rewards, next_values, terminated, truncated, gamma):
    """Discounted return to the episode end; bootstraps at truncations and the rollout end."""
    T, B = rewards.shape
    ret = torch.zeros_like(rewards)
    for b in range(B):
        for t in range(T):
            total = 0.0
            for l in range(T - t):
                k = t + l
                total += gamma ** l * rewards[k, b]
                if terminated[k, b]:
                    break
                if truncated[k, b] or k == T - 1:
                    total += gamma ** (l + 1) * next_values[k, b]
                    break
            ret[t, b] = total
    return ret


@pytest.mark.parametrize("seed,gamma,lam", [(0, 0.99, 0.95), (1, 0.9, 0.5), (2, 1.0, 1.0),
                                            (3, 0.0, 0.7), (4, 0.97, 0.0), (5, 1.0, 0.8)])
def test_gae_matches_naive_double_loop(seed, gamma, lam):
    data = random_rollout(seed)
    torch.testing.assert_close(gae(*data, gamma, lam), naive_gae(*data, gamma, lam))


def test_gae_float32_and_edges_at_first_and_last_step():
    r, v, nv, term, trunc = random_rollout(7, dtype=torch.float32)
    term[0, 0], term[-1, 1] = True, True
    trunc[0, 2], trunc[-1, 3] = True, True
    term[0, 2] = term[-1, 3] = False
    nv = torch.where(term, torch.zeros(()), nv)
    out = gae(r, v, nv, term, trunc, 0.99, 0.95)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, naive_gae(r, v, nv, term, trunc, 0.99, 0.95))


def test_gae_lambda_zero_is_td_residual():
    r, v, nv, term, trunc = random_rollout(11)
    torch.testing.assert_close(gae(r, v, nv, term, trunc, 0.95, 0.0),
                               td_residuals(r, v, nv, term, 0.95))


def test_gae_lambda_one_is_monte_carlo_return_minus_values():
    r, v, nv, term, trunc = random_rollout(12)
    mc = naive_mc_return(r, nv, term, trunc, 0.97)
    torch.testing.assert_close(gae(r, v, nv, term, trunc, 0.97, 1.0), mc - v)
    # n-step returns with n >= T reach the same Monte-Carlo targets
    torch.testing.assert_close(n_step_returns(r, v, nv, term, trunc, 0.97, 100), mc)


def test_truncation_bootstraps_final_obs_value_and_termination_does_not():
    T, gamma, lam = 4, 0.9, 0.8
    r = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)  # (T, 1)
    v = torch.tensor([[0.5], [0.25], [-1.0], [2.0]], dtype=torch.float64)
    none = torch.zeros(T, 1, dtype=torch.bool)
    end_at_1 = none.clone()
    end_at_1[1] = True
    v_final = 10.0

    nv = torch.cat([v[1:], torch.tensor([[7.0]], dtype=torch.float64)])  # bootstrap at T-1
    nv[1] = v_final  # V(final_obs) of the truncated episode
    trunc_adv = gae(r, v, nv, none, end_at_1, gamma, lam)
    # the bootstrap enters exactly at the truncated step ...
    assert trunc_adv[1].item() == pytest.approx(r[1].item() + gamma * v_final - v[1].item())
    # ... the recursion is cut there, and the step before sees it through gamma * lambda
    delta0 = r[0] + gamma * v[1] - v[0]
    assert trunc_adv[0].item() == pytest.approx((delta0 + gamma * lam * trunc_adv[1]).item())
    # the new episode (t >= 2) is unaffected by what happened before
    torch.testing.assert_close(trunc_adv[2:], gae(r[2:], v[2:], nv[2:], none[2:], none[2:],
                                                  gamma, lam))

    term_adv = gae(r, v, nv, end_at_1, none, gamma, lam)  # same data, a real termination
    assert term_adv[1].item() == pytest.approx(r[1].item() - v[1].item())  # no bootstrap
    nv_other = nv.clone()
    nv_other[1] = -123.0
    torch.testing.assert_close(gae(r, v, nv_other, end_at_1, none, gamma, lam), term_adv)
    changed = gae(r, v, nv_other, none, end_at_1, gamma, lam)
    assert (changed[:2] != trunc_adv[:2]).all() and torch.equal(changed[2:], trunc_adv[2:])

    # the truncation bug of Chapter 2's lab: treating the time-out as a death drops V(final_obs)
    bug = gae(r, v, nv, end_at_1, none, gamma, lam)
    assert trunc_adv[1] - bug[1] == pytest.approx(gamma * v_final)


def test_reward_to_go_matches_loop_and_discounted_returns():
    g = torch.Generator().manual_seed(3)
    T, B, gamma = 9, 4, 0.9
    rewards = torch.randn(T, B, generator=g, dtype=torch.float64)
    dones = torch.rand(T, B, generator=g) < 0.25
    dones[0, 0] = dones[-1, 1] = True
    expected = torch.zeros_like(rewards)
    for b in range(B):
        for t in range(T):
            for k in range(t, T):
                expected[t, b] += gamma ** (k - t) * rewards[k, b]
                if dones[k, b]:
                    break
    torch.testing.assert_close(reward_to_go(rewards, dones, gamma), expected)
    # one episode: the closed-form sum of discounted rewards
    ep = rewards[:, 0]
    closed = torch.stack([sum(gamma ** (k - t) * ep[k] for k in range(t, T)) for t in range(T)])
    torch.testing.assert_close(discounted_returns(ep, gamma), closed)
    assert discounted_returns([1.0, 1.0, 1.0], 0.5).tolist() == [1.75, 1.5, 1.0]
    torch.testing.assert_close(reward_to_go(ep, None, 0.0), ep)  # gamma = 0: just the reward


def test_n_step_returns_one_step_and_naive():
    r, v, nv, term, trunc = random_rollout(21, T=10, B=4)
    gamma = 0.9
    one = n_step_returns(r, v, nv, term, trunc, gamma, 1)
    torch.testing.assert_close(one, r + gamma * (~term).double() * nv)
    n = 3
    T, B = r.shape
    expected = torch.zeros_like(r)
    for b in range(B):
        for t in range(T):
            total = 0.0
            for k in range(n):
                s = t + k
                total += gamma ** k * r[s, b]
                last = k == n - 1 or s == T - 1 or term[s, b] or trunc[s, b]
                if last:
                    if not term[s, b]:
                        total += gamma ** (k + 1) * nv[s, b]
                    break
            expected[t, b] = total
    torch.testing.assert_close(n_step_returns(r, v, nv, term, trunc, gamma, n), expected)


def test_lambda_returns_equal_gae_plus_values():
    for seed in range(3):
        data = random_rollout(30 + seed)
        torch.testing.assert_close(lambda_returns(*data, 0.99, 0.9), gae(*data, 0.99, 0.9)
                                   + data[1])


def test_lambda_return_is_weighted_average_of_n_step_returns():
    r, v, nv, _, _ = random_rollout(40, T=6, B=3, p_term=0.0, p_trunc=0.0)
    gamma, lam = 0.9, 0.7
    T = r.shape[0]
    expected = torch.zeros_like(r)
    for t in range(T):
        horizon = T - t  # steps left; the longest n-step return is Monte-Carlo + bootstrap
        for n in range(1, horizon):
            expected[t] += (1 - lam) * lam ** (n - 1) * n_step_returns(r, v, nv, None, None,
                                                                       gamma, n)[t]
        expected[t] += lam ** (horizon - 1) * n_step_returns(r, v, nv, None, None, gamma,
                                                             horizon)[t]
    torch.testing.assert_close(lambda_returns(r, v, nv, None, None, gamma, lam), expected)


def test_time_dim_gives_the_same_advantages_on_token_layout():
    r, v, nv, term, trunc = random_rollout(50)
    a = gae(r, v, nv, term, trunc, 0.99, 0.9)
    b = gae(r.T, v.T, nv.T, term.T, trunc.T, 0.99, 0.9, time_dim=1)  # (B, L)
    torch.testing.assert_close(b, a.T)
    assert b.is_contiguous()
    torch.testing.assert_close(reward_to_go(r.T, term.T, 0.9, time_dim=1),
                               reward_to_go(r, term, 0.9).T)


def trl_style_gae(values, rewards, mask, gamma, lam):
    """The per-token loop of TRL's PPO trainer: padded values/rewards are zero."""
    values, rewards = values * mask, rewards * mask
    last, out = 0.0, []
    L = rewards.shape[1]
    for t in reversed(range(L)):
        nextvalues = values[:, t + 1] if t < L - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        last = delta + gamma * lam * last
        out.append(last)
    return torch.stack(out[::-1], dim=1)


def test_gae_on_lm_tokens_with_mask_matches_trl_loop():
    g = torch.Generator().manual_seed(60)
    B, L = 4, 7
    lengths = torch.tensor([7, 3, 1, 5])
    mask = torch.arange(L)[None, :] < lengths[:, None]  # (B, L) response tokens, right padding
    values = torch.randn(B, L, generator=g, dtype=torch.float64)
    rewards = 0.1 * torch.randn(B, L, generator=g, dtype=torch.float64)  # per-token KL part
    rewards[torch.arange(B), lengths - 1] += 1.0  # score on the last token
    adv = gae(rewards, values, None, None, None, 1.0, 0.95, mask=mask, time_dim=1)
    torch.testing.assert_close(adv * mask, trl_style_gae(values, rewards, mask, 1.0, 0.95) * mask)
    assert (adv[~mask] == 0).all()
    ret = lambda_returns(rewards, values, None, None, None, 1.0, 0.95, mask=mask, time_dim=1)
    torch.testing.assert_close(ret, (adv + values) * mask)
    # next_step_values: V of the next valid token, 0 after the last one
    nv = next_step_values(values, mask, time_dim=1)
    assert nv[1, 1].item() == values[1, 2].item() and nv[1, 2].item() == 0.0
    assert (nv[:, -1] == 0).all()


def test_whiten_with_and_without_mask():
    g = torch.Generator().manual_seed(70)
    x = 3.0 + 2.0 * torch.randn(6, 9, generator=g, dtype=torch.float64)
    w = whiten(x)
    assert w.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert w.std().item() == pytest.approx(1.0, abs=1e-6)
    kept = whiten(x, shift_mean=False)
    assert kept.mean().item() == pytest.approx(x.mean().item())
    mask = torch.rand(6, 9, generator=g) < 0.6
    wm = whiten(x, mask)
    torch.testing.assert_close(wm[mask], whiten(x[mask]))  # statistics of masked entries only
    assert (wm[~mask] == 0).all()
    x_poisoned = torch.where(mask, x, torch.full_like(x, 1e6))  # outside values do not matter
    torch.testing.assert_close(whiten(x_poisoned, mask), wm)
    wk = whiten(x, mask, shift_mean=False)
    assert wk[mask].mean().item() == pytest.approx(x[mask].mean().item())
    with pytest.raises(ValueError, match="at least 2"):
        whiten(x, torch.zeros_like(mask))


def test_errors_name_arguments_and_ranges():
    r, v, nv, term, trunc = random_rollout(80)
    with pytest.raises(ValueError, match="values"):
        gae(r, v[:-1], nv, term, trunc, 0.99, 0.95)
    with pytest.raises(ValueError, match="gamma must be in"):
        gae(r, v, nv, term, trunc, 1.5, 0.95)
    with pytest.raises(ValueError, match="gae_lambda must be in"):
        gae(r, v, nv, term, trunc, 0.99, -0.1)
    with pytest.raises(ValueError, match="dones"):
        reward_to_go(r, term[:, :2])
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        discounted_returns(r, 0.9)
    with pytest.raises(ValueError, match="n must be"):
        n_step_returns(r, v, nv, term, trunc, 0.9, 0)


def test_gae_runs_without_autograd_side_effects_on_inputs():
    r, v, nv, term, trunc = random_rollout(90)
    copies = [x.clone() for x in (r, v, nv, term, trunc)]
    gae(r, v, nv, term, trunc, 0.99, 0.95)
    for a, b in zip(copies, (r, v, nv, term, trunc)):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- bad input
def _gae_inputs(T=4, B=2):
    g = torch.Generator().manual_seed(0)
    return dict(rewards=torch.randn(T, B, generator=g), values=torch.randn(T, B, generator=g),
                next_values=torch.randn(T, B, generator=g),
                terminated=torch.zeros(T, B, dtype=torch.bool),
                truncated=torch.zeros(T, B, dtype=torch.bool), gamma=0.99, gae_lambda=0.95)


@pytest.mark.parametrize("name", ["rewards", "values", "next_values"])
def test_gae_refuses_nan_and_inf_naming_the_argument(name):
    for bad in (float("nan"), float("inf")):
        kw = _gae_inputs()
        kw[name] = kw[name].clone()
        kw[name][2, 1] = bad
        with pytest.raises(ValueError, match=rf"{name} must be finite, got {bad} at index \[2, 1\]"):
            gae(**kw)


def test_gae_refuses_fractional_episode_flags():
    kw = _gae_inputs()
    kw["terminated"] = torch.zeros(4, 2)
    kw["terminated"][1, 0] = 0.5
    with pytest.raises(ValueError, match=r"terminated must hold booleans \(or 0 and 1\), got 0.5"):
        gae(**kw)
    kw["terminated"][1, 0] = 1.0  # 0/1 numbers are flags
    expected = gae(**{**kw, "terminated": kw["terminated"].bool()})
    torch.testing.assert_close(gae(**kw), expected)


def test_gae_with_no_time_steps_says_so():
    kw = _gae_inputs(T=0)
    with pytest.raises(ValueError, match=r"rewards must have at least one time step along "
                                         r"dimension 0, got shape \(0, 2\)"):
        gae(**kw)


def test_gae_accepts_numpy_arrays_and_refuses_other_types():
    kw = _gae_inputs()
    as_numpy = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    torch.testing.assert_close(gae(**as_numpy), gae(**kw))
    with pytest.raises(TypeError, match="rewards must be a tensor .* got str"):
        gae(**{**kw, "rewards": "1, 2, 3"})


def test_whiten_refuses_nan_and_non_tensors():
    x = torch.tensor([1.0, float("nan"), 3.0])
    with pytest.raises(ValueError, match="x must be finite, got nan"):
        whiten(x)
    mask = torch.tensor([True, False, True])
    torch.testing.assert_close(whiten(x, mask)[mask], whiten(torch.tensor([1.0, 3.0])))
    with pytest.raises(TypeError, match="x must be a tensor, got list"):
        whiten([1.0, 2.0])
