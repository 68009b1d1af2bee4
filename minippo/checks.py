"""Exercise checkers: run a reader's function against the package's reference and say what differs.

Every exercise in the book ends with one line, e.g. ``mp.checks.check_gae(my_gae)``. The checker
calls the reader's function on seeded random cases, the edge cases first named in the report
(an episode ending at the first or the last step, every step ending one, ``gamma = 0``,
``lambda = 0`` and ``1``, ...), and compares each answer with the reference in ``minippo``.

* Success: prints one line, ``✓ gae matches the reference on 20 random cases``, returns True.
* First mismatch: raises ``AssertionError`` with the case number and what it tests, the inputs
  (shapes, dtypes and values), the expected and the returned output, the first differing index,
  and hints at the usual mistakes. A wrong shape, dtype or type is said in so many words.
* The reader's function raising: ``AssertionError`` naming the case, chained to the original
  exception so the traceback still points at the reader's line.

Inputs are passed *positionally*, in the order of the package's signature (so a reader may name
their arguments as they like), and as copies: a function that modifies its inputs in place is
reported, since in a training loop it would corrupt the rollout.

The file follows the book: the machinery first, then one section per chapter with its case
generators and checkers. Chapter authors add a checker to their chapter's section: a
``_cases_x(i, generator)`` function returning ``(description, {name: input, ...})`` and a
``check_x(fn)`` that calls :func:`check`, listed in ``__all__``. Random numbers come from a ``torch.Generator`` seeded per case, never from the
global seed, so running a checker does not change the reader's results.
"""
from __future__ import annotations

import copy
import functools
import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from minippo import advantages as _adv
from minippo import objectives as _obj

__all__ = [
    "check",
    "check_discounted_returns",
    "check_reward_to_go",
    "check_softmax_policy_gradient",
    "check_td_residuals",
    "check_gae",
    "check_kl_estimators",
    "check_conjugate_gradient",
    "check_clipped_surrogate",
    "check_tanh_gaussian_log_prob",
    "check_clipped_value_loss",
    "check_explained_variance",
    "check_whiten",
    "check_solved_at",
    "check_kl_penalized_rewards",
    "check_bradley_terry_loss",
    "check_code_reward",
    "check_clipped_tokens",
    "check_group_advantages",
    "check_position_ids",
]


# ============================================= the machinery: run a function against its reference
def _show(x: Any, indent: str = "    ") -> str:
    """A short, readable rendering of one input or output value."""
    if isinstance(x, Tensor):
        values = np.array2string(x.detach().cpu().numpy(), precision=4, threshold=40,
                                 edgeitems=3, suppress_small=True)
        body = ("\n" + values).replace("\n", "\n" + indent)
        return f"tensor of shape {tuple(x.shape)}, dtype {x.dtype}:{body}"
    if isinstance(x, float):
        return f"{x:.6g}"
    return repr(x)


def _show_inputs(inputs: dict[str, Any]) -> str:
    return "\n".join(f"  {name} = {_show(value)}" for name, value in inputs.items())


def _mismatch(expected: Any, got: Any, atol: float, rtol: float, check_dtype: bool,
              label: str, names: tuple[str, ...] | None = None) -> str | None:
    """None if ``got`` matches ``expected``, else a sentence saying how it differs."""
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return (f"{label}: expected a tuple of {len(expected)} values, got "
                    f"{type(got).__name__}" + (f" of length {len(got)}" if
                                               isinstance(got, (tuple, list)) else ""))
        for k, (e, g) in enumerate(zip(expected, got)):
            part = names[k] if names and k < len(names) else f"{label}[{k}]"
            msg = _mismatch(e, g, atol, rtol, check_dtype, part)
            if msg:
                return msg
        return None
    if got is None:
        return f"{label}: your function returned None. Did you forget the `return` statement?"
    if isinstance(expected, Tensor):
        if not isinstance(got, Tensor):
            extra = " (wrap it with torch.as_tensor)" if isinstance(got, np.ndarray) else ""
            return f"{label}: expected a torch.Tensor, got {type(got).__name__}{extra}"
        got = got.detach()
        if got.shape != expected.shape:
            return (f"{label}: wrong shape: expected {tuple(expected.shape)}, got "
                    f"{tuple(got.shape)}")
        if check_dtype and got.dtype != expected.dtype:
            return (f"{label}: wrong dtype: expected {expected.dtype}, got {got.dtype} (create "
                    "new tensors with torch.zeros_like(...) or dtype=... to keep the input's)")
        if expected.dtype == torch.bool or not torch.is_floating_point(expected):
            bad = got.to(expected.dtype) != expected
        else:
            g = got.to(expected.dtype)
            bad = ~torch.isclose(g, expected, rtol=rtol, atol=atol, equal_nan=True)
        if not bool(bad.any()):
            return None
        idx = tuple(int(i) for i in bad.nonzero()[0])
        e_val, g_val = expected[idx].item(), got[idx].item()
        summary = (f"{label}: {int(bad.sum())} of {bad.numel()} entries differ; first difference "
                   f"at index {idx}: expected {e_val:.6g}, got {g_val:.6g}")
        if expected.dim() == 0:
            summary = f"{label}: expected {e_val:.6g}, got {g_val:.6g}"
        return (f"{summary}\n"
                f"  expected (reference) = {_show(expected)}\n"
                f"  got (your function)  = {_show(got)}")
    # a Python number is expected; accept a number or a one-element tensor
    if isinstance(got, Tensor):
        if got.numel() != 1:
            return f"{label}: expected a single number, got a tensor of shape {tuple(got.shape)}"
        got = got.item()
    if not isinstance(got, (int, float, np.floating, np.integer, bool)):
        return f"{label}: expected a number, got {type(got).__name__}"
    e, g = float(expected), float(got)
    if (math.isnan(e) and math.isnan(g)) or math.isclose(g, e, rel_tol=rtol, abs_tol=atol):
        return None
    return f"{label}: expected {e:.6g} (reference), got {g:.6g}"


def check(fn: Callable, reference: Callable, make_case: Callable, n_cases: int = 20,
          atol: float = 1e-5, name: str | None = None, *, rtol: float = 1e-5, seed: int = 0,
          hint: str | None = None, check_dtype: bool = True,
          output_names: tuple[str, ...] | None = None) -> bool:
    """Run ``fn`` against ``reference`` on ``n_cases`` seeded cases; raise on the first mismatch.

    Args:
        fn: the reader's function.
        reference: the correct function (same positional signature).
        make_case: ``make_case(i, generator) -> (description, {name: value, ...})`` (a plain
            dict is accepted too); values are passed to both functions positionally, in order.
        n_cases: number of cases (case ``i`` is built with a generator seeded ``seed, i``).
        atol, rtol: tolerances of ``torch.isclose`` for floating outputs.
        name: what the report calls the function (default: the reference's ``__name__``).
        hint: the usual mistakes, appended to a failure report.
        check_dtype: require the output dtype to equal the reference's.
        output_names: what the report calls each part of a tuple output.
    Returns:
        True (after printing one line) if every case matches.
    Raises:
        AssertionError: on the first case that differs or raises.
    """
    name = name or getattr(reference, "__name__", "function")
    for i in range(n_cases):
        gen = torch.Generator().manual_seed(seed * 100_003 + i)
        case = make_case(i, gen)
        description, inputs = case if isinstance(case, tuple) else (None, case)
        where = f"case {i} of {n_cases}" + (f" ({description})" if description else "")
        expected = reference(*copy.deepcopy(list(inputs.values())))
        given = copy.deepcopy(list(inputs.values()))
        inputs_text = f"\ninputs:\n{_show_inputs(inputs)}"
        footer = f"\nhints: {hint}" if hint else ""
        try:
            got = fn(*given)
        except Exception as err:  # the reader's bug, reported with the case that triggered it
            what = ("is not implemented yet (it raised NotImplementedError)"
                    if isinstance(err, NotImplementedError)
                    else f"raised {type(err).__name__}: {err}")
            raise AssertionError(f"{name}, {where}: your function {what}{inputs_text}"
                                 f"{footer}") from err
        for (arg, before), after in zip(inputs.items(), given):
            if isinstance(before, Tensor) and isinstance(after, Tensor) and not (
                    after.shape == before.shape and torch.equal(after, before)):
                raise AssertionError(f"{name}, {where}: your function modified its input "
                                     f"`{arg}` in place; compute into a new tensor instead"
                                     f"{inputs_text}{footer}")
        msg = _mismatch(expected, got, atol, rtol, check_dtype, "output", output_names)
        if msg:
            summary, _, details = msg.partition("\n")
            details = "\n" + details if details else ""
            raise AssertionError(f"{name} differs from the reference on {where}.\n{summary}"
                                 f"{inputs_text}{details}{footer}")
    print(f"✓ {name} matches the reference on {n_cases} random cases")
    return True


def _check_loss(fn: Callable, reference: Callable, make_case: Callable, n_cases: int, name: str,
                wrt: str, hint: str) -> bool:
    """:func:`check` for a loss: its value and its gradient with respect to its first argument,
    ``wrt`` (a loss with the right value and a detached or wrong gradient trains nothing)."""
    return check(functools.partial(_loss_and_grad, fn), functools.partial(_loss_and_grad, reference),
                 make_case, n_cases, name=name, hint=hint,
                 output_names=("the loss", f"the gradient d loss / d {wrt}"))


def _loss_and_grad(loss_fn: Callable, x: Tensor, *rest) -> tuple[Tensor, Tensor]:
    """(loss, d loss / d x): a checker for a loss compares its value and its gradient."""
    x = x.detach().clone().requires_grad_(True)
    loss = loss_fn(x, *rest)
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        return loss, None  # reported by the value comparison (must be a scalar tensor)
    if not loss.requires_grad:
        raise TypeError("the loss does not depend on its first argument through autograd "
                        "(did you call .item(), .detach() or torch.no_grad()?)")
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    return loss.detach(), torch.zeros_like(x) if grad is None else grad


# ======================================== random rollouts, shared by the chapters 1 and 2 checkers
def _flags(gen: torch.Generator, T: int, B: int, p: float) -> Tensor:
    return torch.rand(T, B, generator=gen) < p  # (T, B) bool


def _rollout_case(i: int, gen: torch.Generator, truncation: bool = True):
    """A random rollout, edge cases first. Returns (description, dict of tensors, gamma, lam)."""
    scenarios = ["random episode ends", "an episode ends at the first step",
                 "episodes end at the last step", "every step ends an episode",
                 "no episode ends", "gamma = 0", "lambda = 0", "lambda = 1", "gamma = 1",
                 "one step, T = 1", "one environment, B = 1", "only truncations",
                 "only terminations"]
    what = scenarios[i] if i < len(scenarios) else "random episode ends"
    T = 1 if what == "one step, T = 1" else int(torch.randint(4, 9, (), generator=gen))
    B = 1 if what == "one environment, B = 1" else int(torch.randint(2, 4, (), generator=gen))
    rewards = torch.randn(T, B, generator=gen)  # (T, B)
    values = torch.randn(T, B, generator=gen)  # (T, B)
    terminated = _flags(gen, T, B, 0.15)  # (T, B)
    truncated = _flags(gen, T, B, 0.15) & ~terminated  # (T, B)
    if what == "an episode ends at the first step":
        terminated[0, 0] = True
        truncated[0, -1] = not bool(terminated[0, -1]) and truncation
    elif what == "episodes end at the last step":
        terminated[-1, 0] = True
        if truncation and B > 1:
            terminated[-1, -1], truncated[-1, -1] = False, True
    elif what == "every step ends an episode":
        terminated = _flags(gen, T, B, 0.5)
        truncated = ~terminated
    elif what == "no episode ends":
        terminated[:], truncated[:] = False, False
    elif what == "only truncations":
        truncated, terminated = truncated | terminated, torch.zeros_like(terminated)
    elif what == "only terminations":
        terminated, truncated = truncated | terminated, torch.zeros_like(truncated)
    if not truncation:
        terminated, truncated = terminated | truncated, torch.zeros_like(truncated)
    # next_values: V(s_{t+1}) inside an episode, V(final_obs) at truncations and at the last
    # step. Where terminated minippo.rollout stores 0, but here it is V(final_obs) too, so a
    # function that forgets (1 - terminated) is caught rather than rescued by the zero.
    next_values = torch.cat([values[1:], torch.randn(1, B, generator=gen)])  # (T, B)
    next_values = torch.where(truncated | terminated, torch.randn(T, B, generator=gen),
                              next_values)
    u = torch.rand(2, generator=gen).tolist()
    gamma = {"gamma = 0": 0.0, "gamma = 1": 1.0}.get(what, 0.99 - 0.1 * u[0])
    lam = {"lambda = 0": 0.0, "lambda = 1": 1.0}.get(what, 0.95 - 0.2 * u[1])
    data = dict(rewards=rewards, values=values, next_values=next_values, terminated=terminated,
                truncated=truncated)
    return what, data, round(gamma, 3), round(lam, 3)


# ====================================================================== Chapter 1, policy gradient
def _cases_discounted_returns(i: int, gen: torch.Generator):
    what, data, gamma, _ = _rollout_case(i, gen)
    T = 1 if what == "one step, T = 1" else int(torch.randint(2, 10, (), generator=gen))
    what = what if what in ("gamma = 0", "gamma = 1", "one step, T = 1") else "one episode"
    return what, {"rewards": torch.randn(T, generator=gen), "gamma": gamma}


def check_discounted_returns(fn: Callable, n_cases: int = 20) -> bool:
    """Check ``fn(rewards, gamma) -> (T,)`` against
    :func:`minippo.advantages.discounted_returns`."""
    return check(fn, _adv.discounted_returns, _cases_discounted_returns, n_cases,
                 name="discounted_returns",
                 hint="G_t = r_t + gamma * G_{t+1} with G_T = 0: loop t from T-1 down to 0; "
                      "G_0 includes r_0 undiscounted; return a tensor shaped like rewards.")


def _cases_reward_to_go(i: int, gen: torch.Generator):
    what, d, gamma, _ = _rollout_case(i, gen, truncation=False)
    return what, {"rewards": d["rewards"], "dones": d["terminated"], "gamma": gamma}


def check_reward_to_go(fn: Callable, n_cases: int = 20) -> bool:
    """Check ``fn(rewards, dones, gamma) -> (T, B)`` against
    :func:`minippo.advantages.reward_to_go`."""
    return check(fn, _adv.reward_to_go, _cases_reward_to_go, n_cases, name="reward_to_go",
                 hint="R_t = r_t + gamma * (1 - done_t) * R_{t+1}: done_t means the episode "
                      "ended AFTER step t, so r_t still counts but nothing after it; no "
                      "bootstrap at the end of the rollout (R_T = 0).")


def _softmax_policy_gradient(logits: Tensor, actions: Tensor, rewards: Tensor,
                             baseline: float) -> Tensor:
    """The score-function estimate by autograd through the policy-gradient surrogate loss."""
    logits = logits.detach().clone().requires_grad_(True)
    logp = torch.log_softmax(logits, dim=-1)[actions]  # (N,)
    loss = _obj.policy_gradient_loss(logp, rewards - baseline)
    (grad,) = torch.autograd.grad(loss, logits)
    return -grad  # (K,) the loss is the NEGATED objective


def _cases_softmax_policy_gradient(i: int, gen: torch.Generator):
    scenarios = ["one sample, N = 1", "two arms", "uniform policy", "zero baseline",
                 "one arm never pulled"]
    what = scenarios[i] if i < len(scenarios) else "random policy and batch"
    K = 2 if what == "two arms" else int(torch.randint(3, 7, (), generator=gen))
    N = 1 if what == "one sample, N = 1" else int(torch.randint(5, 40, (), generator=gen))
    logits = torch.zeros(K) if what == "uniform policy" else torch.randn(K, generator=gen)
    pull = torch.softmax(logits, dim=-1)  # (K,)
    if what == "one arm never pulled":
        pull[-1] = 0.0
    actions = torch.multinomial(pull, N, replacement=True, generator=gen)  # (N,)
    rewards = 1.0 + torch.randn(N, generator=gen)  # (N,)
    baseline = 0.0 if what == "zero baseline" else round(float(torch.randn((), generator=gen)), 3)
    return what, {"logits": logits, "actions": actions, "rewards": rewards, "baseline": baseline}


def check_softmax_policy_gradient(fn: Callable, n_cases: int = 20) -> bool:
    r"""Check ``fn(logits, actions, rewards, baseline) -> (K,)``, the score-function estimate
    :math:`\frac1N \sum_i (r_i - b)\,\nabla_\theta \log \mathrm{softmax}(\theta)_{a_i}` for a
    softmax policy over K arms, against autograd through
    :func:`minippo.objectives.policy_gradient_loss`. Chapter 1, policy gradient."""
    return check(fn, _softmax_policy_gradient, _cases_softmax_policy_gradient, n_cases,
                 name="softmax_policy_gradient",
                 hint="grad_theta log pi(a) = onehot(a) - softmax(theta) (a (N, K) matrix); "
                      "weight row i by (r_i - b) and take the MEAN over the N samples; this is "
                      "the ascent direction, so no minus sign; an arm never pulled still gets "
                      "a nonzero component through -softmax(theta).")


# ============================================================== Chapter 2, value functions and GAE
def _cases_td_residuals(i: int, gen: torch.Generator):
    what, d, gamma, _ = _rollout_case(i, gen)
    return what, {k: d[k] for k in ("rewards", "values", "next_values", "terminated")} | {
        "gamma": gamma}


def check_td_residuals(fn: Callable, n_cases: int = 20) -> bool:
    """Check ``fn(rewards, values, next_values, terminated, gamma)`` against
    :func:`minippo.advantages.td_residuals`."""
    return check(fn, _adv.td_residuals, _cases_td_residuals, n_cases, name="td_residuals",
                 hint="delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t; "
                      "next_values_t is already V(s_{t+1}), do not shift it.")


def _cases_gae(i: int, gen: torch.Generator):
    what, d, gamma, lam = _rollout_case(i, gen)
    return what, d | {"gamma": gamma, "gae_lambda": lam}


def check_gae(fn: Callable, n_cases: int = 20) -> bool:
    """Check ``fn(rewards, values, next_values, terminated, truncated, gamma, gae_lambda)``
    against :func:`minippo.advantages.gae`."""
    return check(fn, _adv.gae, _cases_gae, n_cases, name="gae",
                 hint="delta_t bootstraps next_values_t unless TERMINATED (truncated steps do "
                      "bootstrap: next_values holds V(final_obs) there); A_t = delta_t + gamma "
                      "* lambda * (1 - done_t) * A_{t+1} with done = terminated | truncated; "
                      "loop t from T-1 down to 0 with A_T = 0.")


# =============================================================== Chapter 3, trust regions and TRPO
def _cases_kl(i: int, gen: torch.Generator):
    scenarios = ["samples from q, log-probs under q and p", "p == q (KL = 0)",
                 "p far from q"]
    what = scenarios[i] if i < len(scenarios) else scenarios[0]
    K, N = 5, int(torch.randint(6, 13, (), generator=gen))
    logits_q = torch.randn(K, generator=gen)
    spread = {"p == q (KL = 0)": 0.0, "p far from q": 3.0}.get(what, 0.7)
    logits_p = logits_q + spread * torch.randn(K, generator=gen)
    x = torch.multinomial(torch.softmax(logits_q, 0), N, replacement=True, generator=gen)  # (N,)
    return what, {"logp_q": torch.log_softmax(logits_q, 0)[x],
                  "logp_p": torch.log_softmax(logits_p, 0)[x]}


def check_kl_estimators(k1: Callable | None = None, k2: Callable | None = None,
                        k3: Callable | None = None, n_cases: int = 20) -> bool:
    """Check the reader's per-sample KL estimators ``k(logp_q, logp_p)`` (samples from q)
    against :func:`minippo.objectives.kl_k1`, ``kl_k2`` and ``kl_k3``; pass any of them."""
    given = {"kl_k1": k1, "kl_k2": k2, "kl_k3": k3}
    if all(f is None for f in given.values()):
        raise ValueError("pass at least one estimator: check_kl_estimators(k1=..., k2=..., k3=...)")
    hint = ("the samples come from q (first argument); log rho = logp_p - logp_q (the other "
            "distribution over the one that sampled); k1 = -log rho, k2 = (log rho)^2 / 2, "
            "k3 = (rho - 1) - log rho; return one estimate per sample (no mean).")
    for name, fn in given.items():
        if fn is not None:
            check(fn, getattr(_obj, name), _cases_kl, n_cases, name=name, hint=hint)
    return True


class _MatVec:
    """``Avp(x) = A @ x`` for a symmetric positive-definite ``A`` the reader never sees."""

    def __init__(self, A: Tensor):
        self.A = A

    def __call__(self, x: Tensor) -> Tensor:
        return self.A @ x

    def __repr__(self) -> str:
        eig = torch.linalg.eigvalsh(self.A)
        n = self.A.shape[0]
        return (f"Avp: x -> A @ x, A a {n}x{n} SPD matrix (float64, eigenvalues "
                f"{float(eig.min()):.3g}..{float(eig.max()):.3g})")


def _cases_cg(i: int, gen: torch.Generator):
    scenarios = ["random SPD system", "1x1 system", "diagonal A",
                 "b is an eigenvector of A (CG is exact after one step)"]
    what = scenarios[i] if i < len(scenarios) else scenarios[0]
    n = 1 if what == "1x1 system" else int(torch.randint(2, 9, (), generator=gen))
    eig = 1.0 + 9.0 * torch.rand(n, generator=gen, dtype=torch.float64)  # condition <= 10
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    if what == "diagonal A":
        Q = torch.eye(n, dtype=torch.float64)
    A = Q @ torch.diag(eig) @ Q.T
    A = 0.5 * (A + A.T)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    if what.startswith("b is an eigenvector"):
        A, b = torch.diag(eig), torch.zeros(n, dtype=torch.float64)
        b[0] = 2.0
    return what, {"Avp": _MatVec(A), "b": b, "iters": n}


def _dense_solve(Avp: Callable, b: Tensor, iters: int) -> Tensor:
    """Reference for conjugate gradient: rebuild A column by column and solve exactly."""
    A = torch.stack([Avp(e) for e in torch.eye(b.numel(), dtype=b.dtype)], dim=1)
    return torch.linalg.solve(A, b)


def check_conjugate_gradient(fn: Callable, n_cases: int = 20) -> bool:
    """Check ``fn(Avp, b, iters) -> x`` solving ``A x = b`` given only ``Avp(v) = A @ v``,
    against a dense ``torch.linalg.solve`` on random SPD systems (``iters = n``, float64)."""
    return check(fn, _dense_solve, _cases_cg, n_cases, atol=1e-6, rtol=1e-6,
                 name="conjugate_gradient",
                 hint="start from x = 0, r = p = b; each step: alpha = r.r / p.Ap, x += alpha "
                      "p, r -= alpha Ap, p = r + (r_new.r_new / r.r) p; call Avp once per "
                      "step; stop early when r.r is ~0 (never divide by a zero residual).")


# ============================================================== Chapter 4, PPO's clipped objective
def _cases_surrogate(i: int, gen: torch.Generator):
    scenarios = ["ratios on both sides of the clip range", "ratio = 1 (logp == logp_old)",
                 "all advantages positive", "all advantages negative", "clip_eps = 0.1",
                 "large policy change"]
    what = scenarios[i] if i < len(scenarios) else scenarios[0]
    N = int(torch.randint(5, 13, (), generator=gen))
    logp_old = -torch.rand(N, generator=gen) * 2 - 0.05  # (N,) log-probs of taken actions
    scale = {"ratio = 1 (logp == logp_old)": 0.0, "large policy change": 1.0}.get(what, 0.3)
    logp = logp_old + scale * torch.randn(N, generator=gen)  # (N,)
    adv = torch.randn(N, generator=gen)  # (N,)
    if what == "all advantages positive":
        adv = adv.abs()
    elif what == "all advantages negative":
        adv = -adv.abs()
    clip_eps = 0.1 if what == "clip_eps = 0.1" else 0.2
    return what, {"logp": logp, "logp_old": logp_old, "adv": adv, "clip_eps": clip_eps}


def check_clipped_surrogate(fn: Callable, n_cases: int = 20) -> bool:
    """Check ``fn(logp, logp_old, adv, clip_eps) -> scalar loss`` and its gradient with respect
    to ``logp`` against :func:`minippo.objectives.clipped_surrogate`."""
    return _check_loss(fn, _obj.clipped_surrogate, _cases_surrogate, n_cases, "clipped_surrogate",
                       "logp",
                       hint="return the LOSS, -mean(min(r * A, clip(r, 1 - eps, 1 + eps) * A)) "
                            "with r = exp(logp - logp_old); clip the ratio, not the advantage; "
                            "take the min of the two objectives (or the max of the two losses).")


def _cases_tanh_gaussian(i: int, gen: torch.Generator):
    scenarios = ["u near the mean", "one action dimension", "u far in the tails (|u| up to 25)",
                 "small standard deviation", "per-sample log_std (N, A)"]
    what = scenarios[i] if i < len(scenarios) else scenarios[0]
    N = int(torch.randint(3, 9, (), generator=gen))
    A = 1 if what == "one action dimension" else int(torch.randint(2, 4, (), generator=gen))
    mean = torch.randn(N, A, generator=gen, dtype=torch.float64)  # (N, A)
    log_std = 0.3 * torch.randn(A, generator=gen, dtype=torch.float64)  # (A,)
    if what == "small standard deviation":
        log_std = log_std - 4.0
    if what == "per-sample log_std (N, A)":
        log_std = 0.3 * torch.randn(N, A, generator=gen, dtype=torch.float64)
    u = mean + log_std.exp() * torch.randn(N, A, generator=gen, dtype=torch.float64)  # (N, A)
    if what.startswith("u far"):
        u = 25.0 * (2 * torch.rand(N, A, generator=gen, dtype=torch.float64) - 1)
    return what, {"u": u, "mean": mean, "log_std": log_std}


def check_tanh_gaussian_log_prob(fn: Callable, n_cases: int = 20) -> bool:
    """Check ``fn(u, mean, log_std) -> (N,)``, the log-density of ``a = tanh(u)`` with
    ``u ~ N(mean, exp(log_std)^2)`` (summed over the action dimensions), against
    :func:`minippo.gaussian.tanh_gaussian_log_prob`, tails included."""
    from minippo.gaussian import tanh_gaussian_log_prob
    return check(fn, tanh_gaussian_log_prob, _cases_tanh_gaussian, n_cases,
                 name="tanh_gaussian_log_prob", atol=1e-6, rtol=1e-6,
                 hint="log N(u; mu, sigma) summed over the last dimension, MINUS sum log(1 - "
                      "tanh(u)^2); write the correction as 2 * (log 2 - u - softplus(-2u)), "
                      "because 1 - tanh(u)^2 rounds to 0 for |u| > ~19 in float64 (9 in float32).")


# ====================================================================== Chapter 5, PPO in practice
def _cases_value_loss(i: int, gen: torch.Generator):
    scenarios = ["some predictions move beyond the clip range", "v == v_old",
                 "clip_eps = 0.5", "large value change"]
    what = scenarios[i] if i < len(scenarios) else scenarios[0]
    N = int(torch.randint(5, 13, (), generator=gen))
    v_old = torch.randn(N, generator=gen)  # (N,)
    scale = {"v == v_old": 0.0, "large value change": 2.0}.get(what, 0.4)
    v = v_old + scale * torch.randn(N, generator=gen)  # (N,)
    ret = v_old + torch.randn(N, generator=gen)  # (N,)
    clip_eps = 0.5 if what == "clip_eps = 0.5" else 0.2
    return what, {"v": v, "v_old": v_old, "ret": ret, "clip_eps": clip_eps}


def check_clipped_value_loss(fn: Callable, n_cases: int = 20) -> bool:
    """Check ``fn(v, v_old, ret, clip_eps) -> scalar loss`` and its gradient with respect to
    ``v`` against :func:`minippo.objectives.clipped_value_loss`."""
    return _check_loss(fn, _obj.clipped_value_loss, _cases_value_loss, n_cases,
                       "clipped_value_loss", "v",
                       hint="v_clipped = v_old + clip(v - v_old, -eps, eps); loss = 0.5 * "
                            "mean(max((v - ret)^2, (v_clipped - ret)^2)): note the 0.5 and the MAX "
                            "(pessimistic).")


def _cases_explained_variance(i: int, gen: torch.Generator):
    scenarios = ["noisy predictions", "perfect prediction (1)",
                 "predicting the mean return (0)", "constant returns (NaN)",
                 "worse than the mean (negative)"]
    what = scenarios[i] if i < len(scenarios) else scenarios[0]
    N = int(torch.randint(5, 20, (), generator=gen))
    ret = 3.0 * torch.randn(N, generator=gen)  # (N,)
    v = ret + torch.randn(N, generator=gen)  # (N,)
    if what.startswith("perfect"):
        v = ret.clone()
    elif what.startswith("predicting the mean"):
        v = torch.full_like(ret, float(ret.mean()))
    elif what.startswith("constant returns"):
        ret = torch.full_like(ret, 1.5)
    elif what.startswith("worse"):
        v = -ret
    return what, {"v": v, "ret": ret}


def check_explained_variance(fn: Callable, n_cases: int = 20) -> bool:
    """Check ``fn(v, ret) -> float`` against :func:`minippo.objectives.explained_variance`."""
    return check(fn, _obj.explained_variance, _cases_explained_variance, n_cases,
                 name="explained_variance", rtol=1e-4,
                 hint="1 - Var[ret - v] / Var[ret], NaN (float('nan')) when Var[ret] == 0; "
                      "the variance of the RESIDUAL over the variance of the RETURNS.")


def _cases_whiten(i: int, gen: torch.Generator, masked: bool = True):
    scenarios = ["a flat vector of advantages", "a (B, L) batch of token advantages"]
    if masked:
        scenarios += ["(B, L) tokens with a response mask", "mask with one valid row"]
    what = scenarios[i % len(scenarios)]
    B, L = int(torch.randint(2, 5, (), generator=gen)), int(torch.randint(3, 8, (), generator=gen))
    shape = (B * L,) if what.startswith("a flat") else (B, L)
    x = 2.0 + 3.0 * torch.randn(*shape, generator=gen)  # (B, L)
    if "mask" not in what:
        return what, {"x": x}
    lengths = torch.randint(1, L + 1, (B,), generator=gen)  # (B,) valid tokens per row
    mask = torch.arange(L)[None, :] < lengths[:, None]  # (B, L) right padding
    if what == "mask with one valid row":
        mask[1:] = False
        mask[0, :2] = True
    return what, {"x": x, "mask": mask}


def _whiten_on_mask(whiten_fn: Callable, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Whitened values at the masked entries only (what happens outside the mask is free)."""
    out = whiten_fn(x) if mask is None else whiten_fn(x, mask)
    if mask is None or not isinstance(out, Tensor) or out.shape != x.shape:
        return out
    return out[mask.bool()]


def check_whiten(fn: Callable, n_cases: int = 20, masked: bool = True) -> bool:
    """Check ``fn(x)`` and, if ``masked``, ``fn(x, mask)`` against
    :func:`minippo.advantages.whiten` (only entries inside the mask are compared)."""
    return check(functools.partial(_whiten_on_mask, fn),
                 functools.partial(_whiten_on_mask, _adv.whiten),
                 functools.partial(_cases_whiten, masked=masked), n_cases, rtol=1e-4,
                 atol=1e-4, name="whiten",
                 hint="(x - mean) / sqrt(var + eps) with the UNBIASED variance (torch.var's "
                      "default; std + eps also passes); with a mask, mean and variance are "
                      "taken over the masked entries only.")


def _solved_at(returns: Tensor, window: int, threshold: float) -> int:
    """Index of the first episode at which :meth:`History.solved_at` fires, or -1."""
    from minippo.history import History

    history = History()
    for i, g in enumerate(returns.tolist()):
        history.log_episodes(i, 0.0, [g], [1])  # global_step = episode index
    hit = history.solved_at(threshold, window)
    return -1 if hit is None else int(hit[0])


def _cases_solved_at(i: int, gen: torch.Generator):
    scenarios = ["never solved", "solved at the window-th episode", "fewer episodes than the window",
                 "mean exactly at the threshold", "solved, then falls back (the first time counts)",
                 "window = 1", "an early failure must leave the window first"]
    what = scenarios[i] if i < len(scenarios) else "a random learning curve"
    window = 1 if what == "window = 1" else int(torch.randint(3, 8, (), generator=gen))
    threshold = float(torch.randint(300, 480, (), generator=gen))
    n = int(torch.randint(window + 5, window + 30, (), generator=gen))
    # a noisy rising curve of integer returns in [8, 500], like CartPole's
    rise = torch.linspace(0.0, 1.0, n) ** 2 * 560 + 20 * torch.randn(n, generator=gen)
    returns = rise.round().clamp(8, 500)  # (Ep,)
    if what == "never solved":
        returns = returns.clamp(max=threshold - 1)
    elif what == "solved at the window-th episode":
        returns = torch.full((n,), 500.0)
    elif what == "fewer episodes than the window":
        returns = torch.full((window - 1,), 500.0)
    elif what == "mean exactly at the threshold":
        returns = torch.cat([torch.full((n - window,), 10.0), torch.full((window,), threshold)])
    elif what == "solved, then falls back (the first time counts)":
        returns = torch.cat([torch.full((window,), 500.0), torch.full((n - window,), 9.0)])
    elif what == "an early failure must leave the window first":
        returns = torch.full((n,), 500.0)
        returns[1] = 0.0
    return what, {"returns": returns, "window": window, "threshold": threshold}


def check_solved_at(fn: Callable, n_cases: int = 20) -> bool:
    """Check ``fn(returns, window, threshold) -> int``: the index of the first episode whose
    trailing ``window`` returns have mean >= ``threshold`` (-1 if none), against
    :meth:`minippo.history.History.solved_at`. Chapter 5, convergence."""
    return check(fn, _solved_at, _cases_solved_at, n_cases, name="solved_at",
                 hint="the window of episode i is episodes i - window + 1 .. i (inclusive); no "
                      "verdict before `window` episodes have finished; >= not >; return the "
                      "FIRST index, as a Python int, and -1 when it never happens.")


# ============================================================== Chapter 6, from CartPole to tokens
def _kl_penalized_rewards(score: Tensor, logp: Tensor, logp_ref: Tensor, mask: Tensor,
                          kl_coef: float):
    from minippo.lm.rlhf import kl_penalized_rewards

    return kl_penalized_rewards(score, logp, logp_ref, mask, kl_coef)


def _cases_kl_penalized_rewards(i: int, gen: torch.Generator):
    scenarios = ["a row truncated at full width (no EOS)", "a response that is only EOS",
                 "kl_coef = 0 (the score alone)", "one response, B = 1", "policy == reference"]
    what = scenarios[i] if i < len(scenarios) else "random responses and lengths"
    B = 1 if what == "one response, B = 1" else int(torch.randint(2, 6, (), generator=gen))
    R = int(torch.randint(3, 9, (), generator=gen))
    lengths = torch.randint(1, R + 1, (B,), generator=gen)  # (B,) tokens up to and including EOS
    if what == "a row truncated at full width (no EOS)":
        lengths[0] = R
    elif what == "a response that is only EOS":
        lengths[-1] = 1
    mask = torch.arange(R)[None, :] < lengths[:, None]  # (B, R) a prefix of every row
    logp = -3.0 * torch.rand(B, R, generator=gen)  # (B, R)
    logp_ref = logp.clone() if what == "policy == reference" else -3.0 * torch.rand(B, R, generator=gen)
    score = torch.randn(B, generator=gen)  # (B,)
    kl_coef = 0.0 if what == "kl_coef = 0 (the score alone)" else round(0.3 * float(torch.rand((), generator=gen)), 3)
    return what, {"score": score, "logp": logp, "logp_ref": logp_ref, "mask": mask, "kl_coef": kl_coef}


def check_kl_penalized_rewards(fn: Callable, n_cases: int = 20) -> bool:
    r"""Check ``fn(score, logp, logp_ref, mask, kl_coef) -> (rewards, kl)``, the per-token RLHF
    rewards :math:`r_t = -\beta\,(\log\pi - \log\pi_{ref}) + [t = T_b]\, s_b` and the per-token
    k1 estimate, both ``(B, R)`` and zero outside the mask, against
    :func:`minippo.lm.rlhf.kl_penalized_rewards`. Chapter 6, the KL-penalised reward."""
    return check(fn, _kl_penalized_rewards, _cases_kl_penalized_rewards, n_cases,
                 name="kl_penalized_rewards", output_names=("rewards", "kl"),
                 hint="kl = (logp - logp_ref) inside the mask, 0 outside; rewards = -kl_coef * kl, "
                      "plus score[b] at index mask[b].sum() - 1 (the EOS, or the last token of a "
                      "truncated row), not at R - 1; nothing outside the mask; return a tuple.")


# ======================================================================== Chapter 7, reward models
def _bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    from minippo.lm.reward_model import bradley_terry_loss

    return bradley_terry_loss(r_chosen, r_rejected)


def _cases_bradley_terry_loss(i: int, gen: torch.Generator):
    scenarios = ["equal scores (the loss is log 2)", "one pair, N = 1",
                 "large gaps (|r_w - r_l| up to 200: 1 - sigmoid underflows)",
                 "chosen far below rejected (a confidently wrong model)", "float64 scores",
                 "a constant added to every score (the loss must not change)"]
    what = scenarios[i] if i < len(scenarios) else "random scores"
    N = 1 if what == "one pair, N = 1" else int(torch.randint(2, 33, (), generator=gen))
    dtype = torch.float64 if what == "float64 scores" else torch.float32
    r_w = torch.randn(N, generator=gen, dtype=dtype) * 2  # (N,) scores of the preferred answers
    r_l = torch.randn(N, generator=gen, dtype=dtype) * 2  # (N,) scores of the rejected ones
    if what == "equal scores (the loss is log 2)":
        r_l = r_w.clone()
    elif what.startswith("large gaps"):
        r_w = r_w * 50  # (N,) differences of order +-100..200
        r_w[0], r_l[0] = -100.0, 100.0
    elif what.startswith("chosen far below"):
        r_w, r_l = -r_w.abs() - 20, r_l.abs() + 20
    elif what.startswith("a constant added"):
        c = 1000.0 * float(torch.rand((), generator=gen))
        r_w, r_l = r_w + c, r_l + c
    return what, {"r_chosen": r_w, "r_rejected": r_l}


def check_bradley_terry_loss(fn: Callable, n_cases: int = 20) -> bool:
    r"""Check ``fn(r_chosen, r_rejected) -> scalar loss``, the Bradley-Terry negative
    log-likelihood :math:`-\frac1N\sum_i \log\sigma(r_{w,i} - r_{l,i})`, and its gradient with
    respect to ``r_chosen``, against :func:`minippo.lm.reward_model.bradley_terry_loss`.
    Chapter 7, reward models."""
    return _check_loss(fn, _bradley_terry_loss, _cases_bradley_terry_loss, n_cases,
                       "bradley_terry_loss", "r_chosen",
                       hint="loss = -mean(log sigmoid(r_chosen - r_rejected)), a scalar; the mean, not "
                            "the sum; compute log sigmoid stably (torch.nn.functional.logsigmoid, or "
                            "-softplus(-x)): log(torch.sigmoid(x)) is -inf once sigmoid(x) underflows "
                            "to 0; keep the result a tensor (no .item()).")


# ============================================================== Chapter 8, capstone: RLHF for code
def _code_reward(syntax: Tensor, tests: Tensor, quality: Tensor, violation: Tensor,
                 finished: Tensor, weights: tuple, missing_eos_penalty: float) -> Tensor:
    """The rule of :func:`minippo.lm.code_reward.code_rewards` on ``(B,)`` tensors."""
    from minippo.lm.code_reward import composite_reward

    total = composite_reward(syntax, tests, quality, weights)  # (B,)
    total = torch.where(violation, torch.zeros_like(total), total)  # (B,)
    return total - missing_eos_penalty * (~finished).to(total.dtype)  # (B,)


def _cases_code_reward(i: int, gen: torch.Generator):
    scenarios = ["a random batch", "every response finished, no violation",
                 "a violation without EOS (penalty on top of the zero)",
                 "weights (1, 0, 0): syntax only", "missing_eos_penalty = 0",
                 "random weights and penalty"]
    what = scenarios[i] if i < len(scenarios) else scenarios[0]
    B = int(torch.randint(4, 13, (), generator=gen))
    syntax = (torch.rand(B, generator=gen) < 0.8).float()  # (B,)
    tests = torch.randint(0, 5, (B,), generator=gen).float() / 4 * syntax  # (B,) quarters, 0 if no parse
    quality = torch.rand(B, generator=gen) * syntax  # (B,)
    violation = (torch.rand(B, generator=gen) < 0.2) & syntax.bool()  # (B,) only programs that ran
    finished = torch.rand(B, generator=gen) < 0.8  # (B,)
    weights, penalty = (0.3, 0.5, 0.2), 1.0
    if what == "every response finished, no violation":
        violation, finished = torch.zeros_like(violation), torch.ones_like(finished)
    elif what == "a violation without EOS (penalty on top of the zero)":
        violation[0], finished[0], syntax[0] = True, False, 1.0
    elif what == "weights (1, 0, 0): syntax only":
        weights = (1.0, 0.0, 0.0)
    elif what == "missing_eos_penalty = 0":
        penalty = 0.0
    elif what == "random weights and penalty":
        w = torch.rand(3, generator=gen)
        weights = tuple(round(float(x), 3) for x in w / w.sum())
        penalty = round(2 * float(torch.rand((), generator=gen)), 3)
    return what, {"syntax": syntax, "tests": tests, "quality": quality, "violation": violation,
                  "finished": finished, "weights": weights, "missing_eos_penalty": penalty}


def check_code_reward(fn: Callable, n_cases: int = 20) -> bool:
    """Check ``fn(syntax, tests, quality, violation, finished, weights, missing_eos_penalty) -> (B,)``,
    the composite code reward (weighted parts, 0 where the sandbox stopped or refused the
    program, minus the penalty where the response has no EOS), against the rule of
    :func:`minippo.lm.code_reward.code_rewards`. Chapter 8, the reward."""
    return check(fn, _code_reward, _cases_code_reward, n_cases, name="code_reward",
                 hint="w_s * syntax + w_t * tests + w_q * quality; a violation REPLACES that sum "
                      "by 0 (torch.where), it does not subtract from it; the EOS penalty is "
                      "subtracted where finished is False, violation or not.")


def _clipped_tokens(logp: Tensor, logp_old: Tensor, adv: Tensor, clip_eps: float) -> Tensor:
    """True where :func:`minippo.objectives.clipped_surrogate` has zero gradient (autograd)."""
    _, grad = _loss_and_grad(_obj.clipped_surrogate, logp, logp_old, adv, clip_eps)
    return grad == 0  # (N,)


def check_clipped_tokens(fn: Callable, n_cases: int = 20) -> bool:
    """Check ``fn(logp, logp_old, adv, clip_eps) -> bool tensor``: the tokens whose gradient the
    clip removes, against the autograd gradient of :func:`minippo.objectives.clipped_surrogate`.
    Chapter 8, one PPO batch step by step."""
    return check(fn, _clipped_tokens, _cases_surrogate, n_cases, name="clipped_tokens",
                 hint="ratio = exp(logp - logp_old); silenced where ratio > 1 + eps AND adv > 0, "
                      "or ratio < 1 - eps AND adv < 0; a ratio outside the range against its "
                      "advantage keeps its gradient; return a bool tensor of logp's shape.")


# =========================================================================== Chapter 9, beyond PPO
def _group_advantages(scores: Tensor, group_size: int, scale: bool) -> Tensor:
    from minippo.lm.alternatives import group_advantages

    return group_advantages(scores, group_size, scale=scale)


def _cases_group_advantages(i: int, gen: torch.Generator):
    scenarios = ["a group whose scores are all equal", "group size 2", "scale = False (Dr. GRPO)",
                 "one group only", "binary pass/fail scores"]
    what = scenarios[i] if i < len(scenarios) else "random groups"
    G = 2 if what == "group size 2" else int(torch.randint(2, 7, (), generator=gen))
    Q = 1 if what == "one group only" else int(torch.randint(2, 5, (), generator=gen))
    scores = torch.randn(Q * G, generator=gen)  # (Q * G,)
    if what == "a group whose scores are all equal":
        scores[:G] = 0.7
    elif what == "binary pass/fail scores":
        scores = (scores > 0).float()
    scale = what != "scale = False (Dr. GRPO)" and (i < len(scenarios) or bool(torch.rand((), generator=gen) < 0.7))
    return what, {"scores": scores, "group_size": G, "scale": scale}


def check_group_advantages(fn: Callable, n_cases: int = 20) -> bool:
    r"""Check ``fn(scores, group_size, scale) -> (Q * G,)``, GRPO's group-relative advantage
    :math:`(s_i - \operatorname{mean}(s)) / (\operatorname{std}(s) + 10^{-4})` (no division when
    ``scale`` is False, Dr. GRPO), against :func:`minippo.lm.alternatives.group_advantages`.
    Chapter 9, GRPO."""
    return check(fn, _group_advantages, _cases_group_advantages, n_cases, name="group_advantages",
                 atol=1e-4, rtol=1e-4,
                 hint="groups are CONSECUTIVE rows: scores.reshape(-1, group_size), not (group_size, -1); "
                      "mean and std along dim=1 with keepdim; torch.std is the unbiased one (n - 1); "
                      "add 1e-4 to the std, so an all-equal group gives zeros, not NaN.")


# ========================================================================= Chapter 10, minippo to TRL
def _position_ids(attention_mask: Tensor) -> Tensor:
    from minippo.lm.model import sequence_positions

    return sequence_positions(attention_mask)


def _cases_position_ids(i: int, gen: torch.Generator):
    scenarios = ["no padding at all", "one row that is all padding but its last token",
                 "bool mask", "a single row", "a real token after a gap (packed rows)"]
    what = scenarios[i] if i < len(scenarios) else "random left padding"
    B = 1 if what == "a single row" else int(torch.randint(2, 6, (), generator=gen))
    L = int(torch.randint(3, 12, (), generator=gen))
    real = torch.randint(1, L + 1, (B,), generator=gen)  # real tokens per row, at the right end
    if what == "no padding at all":
        real[:] = L
    elif what == "one row that is all padding but its last token":
        real[0] = 1
    mask = torch.arange(L)[None, :] >= (L - real)[:, None]  # (B, L) left padding
    if what == "a real token after a gap (packed rows)":
        mask[0, 0], mask[0, 1] = True, False  # a real token, a gap, then the row's tokens
    mask = mask if what == "bool mask" else mask.long()
    return what, {"attention_mask": mask}


def check_position_ids(fn: Callable, n_cases: int = 20) -> bool:
    r"""Check ``fn(attention_mask) -> (B, L) long``: the position of every token counted from the
    row's first real token, :math:`p_{b,t} = \sum_{t' \le t} m_{b,t'} - 1`, and 0 on padding,
    against :func:`minippo.lm.model.sequence_positions`.  Chapter 10, the position pitfall."""
    return check(fn, _position_ids, _cases_position_ids, n_cases, name="position_ids",
                 hint="count real tokens along each row (cumsum over dim=1, not dim=0) and subtract 1; "
                      "left padding then gets -1, which an embedding cannot look up: clamp it to 0; "
                      "accept a bool or an integer mask (cast it with .long() first); return int64.")
