"""Exercise checkers: right answers pass, typical student mistakes fail with a useful message."""
import pytest
import torch

torch.set_num_threads(1)

from minippo import advantages, checks, objectives  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# ---------------------------------------------------------------- student-style solutions
def student_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1 - terminated[t].float()) - values[t]
        last = delta + gamma * lam * (1 - (terminated[t] | truncated[t]).float()) * last
        adv[t] = last
    return adv


def gae_forgets_done(rewards, values, next_values, terminated, truncated, gamma, lam):
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1 - terminated[t].float()) - values[t]
        last = delta + gamma * lam * last  # BUG: runs across episode boundaries
        adv[t] = last
    return adv


def gae_off_by_one(rewards, values, next_values, terminated, truncated, gamma, lam):
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0] - 1)):  # BUG: skips the last step
        delta = rewards[t] + gamma * next_values[t] * (1 - terminated[t].float()) - values[t]
        last = delta + gamma * lam * (1 - (terminated[t] | truncated[t]).float()) * last
        adv[t] = last
    return adv


def gae_truncation_bug(rewards, values, next_values, terminated, truncated, gamma, lam):
    return student_gae(rewards, values, next_values, terminated | truncated, truncated, gamma,
                       lam)


def gae_forward_loop(rewards, values, next_values, terminated, truncated, gamma, lam):
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0]):  # BUG: forward in time, A_t cannot see A_{t+1}
        delta = rewards[t] + gamma * next_values[t] * (1 - terminated[t].float()) - values[t]
        last = delta + gamma * lam * (1 - (terminated[t] | truncated[t]).float()) * last
        adv[t] = last
    return adv


def gae_missing_gamma(rewards, values, next_values, terminated, truncated, gamma, lam):
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1 - terminated[t].float()) - values[t]
        last = delta + lam * (1 - (terminated[t] | truncated[t]).float()) * last  # BUG: no gamma
        adv[t] = last
    return adv


def student_discounted_returns(rewards, gamma):
    out, running = torch.zeros_like(rewards), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def returns_missing_gamma(rewards, gamma):
    return rewards.flip(0).cumsum(0).flip(0)  # BUG: the undiscounted sum


def returns_forward_loop(rewards, gamma):
    out, running = torch.zeros_like(rewards), 0.0
    for t in range(len(rewards)):  # BUG: accumulates the past, not the future
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def returns_discounts_first_reward(rewards, gamma):
    out, running = torch.zeros_like(rewards), 0.0
    for t in reversed(range(len(rewards))):
        running = gamma * (rewards[t] + running)  # BUG: r_t itself discounted
        out[t] = running
    return out


def student_td_residuals(rewards, values, next_values, terminated, gamma):
    return rewards + gamma * next_values * (~terminated).float() - values


def td_wrong_sign(rewards, values, next_values, terminated, gamma):
    return values - rewards - gamma * next_values * (~terminated).float()


def td_missing_gamma(rewards, values, next_values, terminated, gamma):
    return rewards + next_values * (~terminated).float() - values


def student_reward_to_go(rewards, dones, gamma):
    out, running = torch.zeros_like(rewards), torch.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running * (~dones[t])
        out[t] = running
    return out


def reward_to_go_missing_gamma(rewards, dones, gamma):
    return student_reward_to_go(rewards, dones, 1.0)  # BUG: gamma ignored


def reward_to_go_off_by_one(rewards, dones, gamma):
    out, running = torch.zeros_like(rewards), torch.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        out[t] = running  # BUG: stores R_{t+1} instead of R_t
        running = rewards[t] + gamma * running * (~dones[t])
    return out


def td_forgets_terminated(rewards, values, next_values, terminated, gamma):
    return rewards + gamma * next_values - values


def student_surrogate(logp, logp_old, adv, clip_eps):
    ratio = torch.exp(logp - logp_old)
    return torch.max(-ratio * adv, -ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv).mean()


def surrogate_wrong_sign(logp, logp_old, adv, clip_eps):
    ratio = torch.exp(logp - logp_old)
    return torch.min(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv).mean()


def surrogate_clips_advantage(logp, logp_old, adv, clip_eps):
    ratio = torch.exp(logp - logp_old)
    return -torch.min(ratio * adv, ratio * adv.clamp(-clip_eps, clip_eps)).mean()


def surrogate_without_min(logp, logp_old, adv, clip_eps):
    ratio = torch.exp(logp - logp_old)
    return -(ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv).mean()


def surrogate_detached(logp, logp_old, adv, clip_eps):
    return student_surrogate(logp.detach(), logp_old, adv, clip_eps)


def surrogate_ratio_inverted(logp, logp_old, adv, clip_eps):
    return student_surrogate(logp_old, logp, adv, clip_eps)  # BUG: pi_old / pi


def student_value_loss(v, v_old, ret, clip_eps):
    v_clip = v_old + (v - v_old).clamp(-clip_eps, clip_eps)
    return 0.5 * torch.max((v - ret) ** 2, (v_clip - ret) ** 2).mean()


def value_loss_without_half(v, v_old, ret, clip_eps):
    return 2 * student_value_loss(v, v_old, ret, clip_eps)


def value_loss_uses_min(v, v_old, ret, clip_eps):
    v_clip = v_old + (v - v_old).clamp(-clip_eps, clip_eps)
    return 0.5 * torch.min((v - ret) ** 2, (v_clip - ret) ** 2).mean()


def student_cg(Avp, b, iters):
    x, r, p = torch.zeros_like(b), b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr < 1e-20:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = r @ r
        p, rr = r + rr_new / rr * p, rr_new
    return x


def cg_gradient_descent(Avp, b, iters):
    x = torch.zeros_like(b)
    for _ in range(iters):
        x = x + 0.05 * (b - Avp(x))
    return x


def student_k1(logp_q, logp_p):
    return logp_q - logp_p


def student_k2(logp_q, logp_p):
    return 0.5 * (logp_p - logp_q) ** 2


def student_k3(logp_q, logp_p):
    log_r = logp_p - logp_q
    return log_r.exp() - 1 - log_r


def student_explained_variance(v, ret):
    var_ret = ret.var(unbiased=False)
    return float("nan") if var_ret == 0 else float(1 - (ret - v).var(unbiased=False) / var_ret)


def student_whiten(x, mask=None):
    if mask is None:
        return (x - x.mean()) / (x.std() + 1e-8)
    vals = x[mask]
    return (x - vals.mean()) / (vals.std() + 1e-8)


def whiten_ignores_mask(x, mask=None):
    return (x - x.mean()) / (x.std() + 1e-8)


# ---------------------------------------------------------------- tests
def test_student_solutions_pass(capsys):
    """Solutions written the way a reader writes them (loops, no minippo) pass every checker."""
    assert checks.check_gae(student_gae)
    assert checks.check_reward_to_go(student_reward_to_go)
    assert checks.check_discounted_returns(student_discounted_returns)
    assert checks.check_td_residuals(student_td_residuals)
    assert checks.check_clipped_surrogate(student_surrogate)
    assert checks.check_clipped_value_loss(student_value_loss)
    assert checks.check_kl_estimators(student_k1, student_k2, student_k3)
    assert checks.check_conjugate_gradient(student_cg)
    assert checks.check_explained_variance(student_explained_variance)
    assert checks.check_whiten(student_whiten)
    out = capsys.readouterr().out
    assert "✓ gae matches the reference on 20 random cases" in out
    assert out.count("✓") == 12


@pytest.mark.parametrize("checker,wrong,says", [
    (checks.check_gae, gae_forgets_done, "case 0 of 20"),
    (checks.check_gae, gae_off_by_one, "case 0 of 20"),
    (checks.check_gae, gae_truncation_bug, r"first difference at index \("),
    (checks.check_gae, gae_forward_loop, "case 0 of 20"),
    (checks.check_gae, gae_missing_gamma, "case"),
    (checks.check_discounted_returns, returns_missing_gamma, "case 0 of 20"),
    (checks.check_discounted_returns, returns_forward_loop, "case 0 of 20"),
    (checks.check_discounted_returns, returns_discounts_first_reward, "case 0 of 20"),
    (checks.check_reward_to_go, reward_to_go_off_by_one, "first difference at index"),
    (checks.check_reward_to_go, reward_to_go_missing_gamma, "case 0 of 20"),
    (checks.check_td_residuals, td_forgets_terminated, "episode ends"),
    (checks.check_td_residuals, td_wrong_sign, "case 0 of 20"),
    (checks.check_td_residuals, td_missing_gamma, "case 0 of 20"),
    (checks.check_clipped_surrogate, surrogate_wrong_sign, "the loss: expected"),
    (checks.check_clipped_surrogate, surrogate_clips_advantage, "case"),
    (checks.check_clipped_surrogate, surrogate_without_min, "case"),
    (checks.check_clipped_surrogate, surrogate_detached, "does not depend"),
    (checks.check_clipped_surrogate, surrogate_ratio_inverted, "case 0 of 20"),
    (checks.check_clipped_value_loss, value_loss_uses_min, "case"),
    (checks.check_clipped_value_loss, value_loss_without_half, "case 0 of 20"),
    (checks.check_conjugate_gradient, cg_gradient_descent, "conjugate_gradient differs"),
    (checks.check_whiten, whiten_ignores_mask, "mask"),
])
def test_typical_mistakes_fail_with_the_case(checker, wrong, says):
    with pytest.raises(AssertionError, match=says) as info:
        checker(wrong)
    message = str(info.value)
    assert "case" in message and "inputs:" in message and "hints:" in message


def test_gae_truncation_bug_is_reported_on_a_truncation_case():
    with pytest.raises(AssertionError) as info:
        checks.check_gae(gae_truncation_bug)
    message = str(info.value)
    assert "truncated = tensor of shape" in message
    assert "expected (reference)" in message and "got (your function)" in message


def test_kl_estimator_direction_mistake():
    with pytest.raises(AssertionError, match="kl_k1 differs"):
        checks.check_kl_estimators(k1=lambda logp_q, logp_p: logp_p - logp_q)
    with pytest.raises(AssertionError, match="kl_k2 differs"):
        checks.check_kl_estimators(k2=lambda logp_q, logp_p: (logp_p - logp_q) ** 2)  # no 1/2
    with pytest.raises(AssertionError, match="kl_k3"):
        checks.check_kl_estimators(k3=lambda logp_q, logp_p: (logp_p - logp_q).exp() - 1)
    with pytest.raises(AssertionError, match="kl_k3 differs"):  # the sign of log r
        checks.check_kl_estimators(k3=lambda logp_q, logp_p: (logp_p - logp_q).exp() - 1
                                   + (logp_p - logp_q))
    with pytest.raises(AssertionError, match="kl_k3 differs"):  # one mean, not one per sample
        checks.check_kl_estimators(k3=lambda q, p: student_k3(q, p).mean().expand_as(q))
    with pytest.raises(ValueError, match="at least one"):
        checks.check_kl_estimators()


def test_explained_variance_mistakes():
    with pytest.raises(AssertionError, match="case"):
        checks.check_explained_variance(lambda v, ret: float(1 - ret.var() / (ret - v).var()))
    with pytest.raises(AssertionError, match="case"):  # Var[V] / Var[R]: not a residual
        checks.check_explained_variance(lambda v, ret: float(v.var() / ret.var()))
    # returning a 0-dim tensor instead of a float is accepted
    assert checks.check_explained_variance(
        lambda v, ret: torch.tensor(objectives.explained_variance(v, ret)))


def test_shape_dtype_none_raise_and_in_place_are_named():
    def wrong_shape(rewards, gamma):
        return advantages.discounted_returns(rewards, gamma)[None]

    def wrong_dtype(rewards, gamma):
        return advantages.discounted_returns(rewards, gamma).double()

    def forgot_return(rewards, gamma):
        advantages.discounted_returns(rewards, gamma)

    def crashes(rewards, gamma):
        return rewards / 0 if gamma > 2 else [][0]

    def not_done(rewards, gamma):
        raise NotImplementedError

    def in_place(rewards, gamma):
        out = advantages.discounted_returns(rewards, gamma)
        rewards.zero_()
        return out

    for fn, says in [(wrong_shape, "wrong shape: expected"), (wrong_dtype, "wrong dtype"),
                     (forgot_return, "returned None"), (crashes, "raised IndexError"),
                     (not_done, "not implemented yet"), (in_place, "in place")]:
        with pytest.raises(AssertionError, match=says) as info:
            checks.check_discounted_returns(fn)
        assert "case 0 of 20" in str(info.value)
    with pytest.raises(AssertionError) as info:
        checks.check_discounted_returns(crashes)
    assert isinstance(info.value.__cause__, IndexError)  # the reader's traceback is kept


def test_generic_check_with_a_plain_dict_case(capsys):
    def make_case(i, generator):
        return {"x": torch.randn(3, generator=generator), "k": i}

    assert checks.check(lambda x, k: x * k, lambda x, k: k * x, make_case, n_cases=5,
                        name="scale")
    assert "✓ scale matches the reference on 5 random cases" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=r"case 2 of 5"):
        checks.check(lambda x, k: x * k + (k == 2), lambda x, k: k * x, make_case, n_cases=5)


# ---------------------------------------------------------------- chapters 1 and 9
def student_softmax_policy_gradient(logits, actions, rewards, baseline):
    probs = torch.softmax(logits, dim=-1)  # (K,)
    onehot = F.one_hot(actions, logits.shape[0]).to(probs.dtype)  # (N, K)
    return ((rewards - baseline)[:, None] * (onehot - probs)).mean(0)  # (K,)


def student_group_advantages(scores, group_size, scale):
    s = scores.reshape(-1, group_size)
    adv = s - s.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (s.std(dim=1, keepdim=True) + 1e-4)
    return adv.reshape(-1)


def test_softmax_policy_gradient_checker(capsys):
    assert checks.check_softmax_policy_gradient(student_softmax_policy_gradient)
    for wrong in [
        lambda lg, a, r, b: -student_softmax_policy_gradient(lg, a, r, b),  # the loss's gradient
        lambda lg, a, r, b: student_softmax_policy_gradient(lg, a, r, 0.0),  # baseline forgotten
        lambda lg, a, r, b: ((r - b)[:, None] * F.one_hot(a, lg.shape[0])).mean(0),  # no -softmax
        lambda lg, a, r, b: student_softmax_policy_gradient(lg, a, r, b) * len(a),  # sum, not mean
    ]:
        with pytest.raises(AssertionError, match=r"case \d+ of 20"):
            checks.check_softmax_policy_gradient(wrong)


def test_group_advantages_checker():
    import minippo.lm  # noqa: F401  (the reference lives in minippo.lm.alternatives)

    assert checks.check_group_advantages(student_group_advantages)
    for wrong in [
        lambda s, g, scale: student_group_advantages(s.reshape(g, -1).T.reshape(-1), g, scale),
        lambda s, g, scale: student_group_advantages(s, g, True),  # ignores Dr. GRPO's switch
        lambda s, g, scale: (s - s.mean()) / (s.std() + 1e-4),  # the batch, not the group
    ]:
        with pytest.raises(AssertionError, match=r"case \d+ of 20"):
            checks.check_group_advantages(wrong)
