"""Best-of-n: the unbiased estimator against all subsets, the KL formula against exact sums."""
import itertools
import math

import numpy as np
import pytest

from minippo.lm.best_of_n import best_of_n_estimate, best_of_n_kl, best_of_n_weights


def test_estimator_equals_the_mean_over_all_subsets():
    rng = np.random.default_rng(0)
    P, N = 3, 7
    proxy, value = rng.normal(size=(P, N)), rng.normal(size=(P, N))
    ns = list(range(1, N + 1))
    mean, se = best_of_n_estimate(proxy, value, ns)
    brute = np.array([[np.mean([value[p, max(s, key=lambda j: proxy[p, j])]
                                for s in itertools.combinations(range(N), n)]) for n in ns]
                      for p in range(P)])  # (P, len(ns))
    np.testing.assert_allclose(mean, brute.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(se, brute.std(axis=0, ddof=1) / np.sqrt(P), rtol=1e-10)
    # n = 1 is the pool's mean, n = N the value of the pool's best
    assert mean[0] == pytest.approx(value.mean())
    assert mean[-1] == pytest.approx(np.mean(value[np.arange(P), proxy.argmax(axis=1)]))


def test_weights_sum_to_one_and_favour_high_ranks():
    for N in (1, 5, 16, 40):
        for n in (1, N // 2 or 1, N):
            w = best_of_n_weights(N, n)
            assert w.shape == (N,) and w.sum() == pytest.approx(1.0)
            assert np.all(np.diff(w) >= 0)
    with pytest.raises(ValueError, match="n must be in"):
        best_of_n_weights(4, 5)


def test_estimator_is_unbiased_for_fresh_samples():
    # with a known joint law, the pool estimate's average matches best-of-n by simulation
    rng = np.random.default_rng(1)
    P, N, n = 20000, 8, 3  # standard error of the estimate about 0.005
    proxy = rng.normal(size=(P, N))
    value = proxy + rng.normal(size=(P, N))  # the true value correlates with the proxy
    est, _ = best_of_n_estimate(proxy, value, [n])
    fresh_proxy = rng.normal(size=(200000, n))
    fresh_value = fresh_proxy + rng.normal(size=(200000, n))
    direct = fresh_value[np.arange(200000), fresh_proxy.argmax(axis=1)].mean()
    assert est[0] == pytest.approx(direct, abs=0.03)
    # E[max of 3 normals] = 3 / (2 sqrt(pi)): the expected value of the kept response
    assert direct == pytest.approx(3 / (2 * math.sqrt(math.pi)), abs=0.01)


@pytest.mark.parametrize("n", [1, 2, 4, 16, 64])
def test_kl_formula_against_an_exact_sum(n):
    # a reference uniform over M responses with distinct scores: best-of-n keeps the j-th
    # lowest with probability (j/M)^n - ((j-1)/M)^n; its KL tends to log n - (n-1)/n as M grows
    M = 200000
    F = np.arange(M + 1) / M
    p = np.diff(F ** n)  # (M,)
    kl_exact = float(np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1) * M), 0.0)))
    assert kl_exact <= best_of_n_kl(n) + 1e-12  # discrete (finite M): never above the formula
    assert kl_exact == pytest.approx(best_of_n_kl(n), abs=1e-3)
    assert best_of_n_kl(1) == 0.0


def test_kl_vectorised_and_checked():
    ns = np.array([1, 2, 8])
    np.testing.assert_allclose(best_of_n_kl(ns), np.log(ns) - (ns - 1) / ns)
    with pytest.raises(ValueError, match="n must be >= 1"):
        best_of_n_kl(0)
