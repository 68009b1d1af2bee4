"""What the code sandbox costs: one batch of benign programs, and one RLHF-PPO iteration.

    python benchmarks/sandbox_speed.py                     # 30 batches, 8 PPO iterations x 3 runs
    python benchmarks/sandbox_speed.py --repeats 50 --iterations 10 --runs 5

DESIGN.md's budgets: a batch of 64 benign candidates with 4 unit tests each in under 100 ms on
an idle 2-core machine, and an RLHF-PPO iteration no more than 15% slower than before issue 12
(the sandbox rewrite). Both go through public functions that did not change in that rewrite,
so the same script measures the commit before it (``PYTHONPATH=<old checkout> python ...``).

* **batch**: :func:`minippo.lm.code_reward.code_rewards` on the reference bodies of 64 specs
  of :func:`minippo.lm.codetask.make_specs` (64 distinct programs, 4 tests each, all correct):
  the static guard, the sandbox, and the reward's own bookkeeping (its caches warm).
* **ppo**: :func:`minippo.lm.rlhf.train` with the default ``RLHFConfig`` for ``--iterations``
  iterations from the cached SFT model of chapter 8; the time per iteration, and the part of it
  spent in the reward function (sampling, scoring, update all included in the first).

Wall times are ``time.perf_counter``; CPU times are this process's plus its reaped children's
(the sandbox's processes), from :func:`resource.getrusage`, so they count the sandbox's work
wherever it ran. On a machine shared with other jobs wall time is inflated by the load, which
the script prints before and after; CPU time is what load changes least. Minimum and median
over repeats are printed: the minimum is the closest to an idle machine.
"""
from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import time

import torch

from minippo.lm import code_reward, codetask, rlhf, sft


def cpu_seconds() -> float:
    """CPU time of this process and of every child it has waited for (user + system)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(fn, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``repeats`` calls of ``fn``."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), cpu_seconds()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(cpu_seconds() - c)
    return walls, cpus


def summary(name: str, walls: list[float], cpus: list[float], unit: float = 1e3, label: str = "ms") -> str:
    return (f"{name}: wall min {min(walls) * unit:.1f} {label}, median {statistics.median(walls) * unit:.1f} {label}; "
            f"CPU min {min(cpus) * unit:.1f} {label}, median {statistics.median(cpus) * unit:.1f} {label}")


def bench_batch(repeats: int) -> str:
    specs = codetask.make_specs()[:64]
    bodies = [s.reference_body for s in specs]

    def batch():
        out = code_reward.code_rewards(specs, bodies, [True] * len(specs))
        assert out.rewards == [1.0] * len(specs), out.rewards

    batch()  # warm the caches and the file cache
    return summary("batch of 64 benign programs x 4 tests", *measure(batch, repeats))


class TimedReward:
    """A reward function that adds up the wall time spent inside it."""

    def __init__(self, reward_fn):
        self.reward_fn, self.seconds = reward_fn, 0.0

    def __call__(self, *args):
        start = time.perf_counter()
        try:
            return self.reward_fn(*args)
        finally:
            self.seconds += time.perf_counter() - start


def bench_ppo(iterations: int, runs: int) -> str:
    task = codetask.make_task()
    sft_model, _ = sft.pretrained_sft(task.corpus, progress=False)
    prompts = [s.prompt for s in task.train]
    config = rlhf.RLHFConfig(iterations=iterations)
    walls, cpus, reward_share = [], [], []
    for run in range(runs + 1):  # run 0 warms up (imports, allocator, first sandbox start)
        reward = TimedReward(task.reward_fn())
        w, c = time.perf_counter(), cpu_seconds()
        rlhf.train(copy.deepcopy(sft_model), prompts, reward, config, seed=run, progress=False)
        wall, cpu = time.perf_counter() - w, cpu_seconds() - c
        if run:
            walls.append(wall / iterations)
            cpus.append(cpu / iterations)
            reward_share.append(reward.seconds / wall)
    return (summary(f"RLHF-PPO iteration ({runs} runs x {iterations} iterations)", walls, cpus)
            + f"; reward function {statistics.median(reward_share):.0%} of the wall time (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed batches")
    parser.add_argument("--iterations", type=int, default=8, help="PPO iterations per run")
    parser.add_argument("--runs", type=int, default=3, help="timed PPO runs (after one warm-up run)")
    parser.add_argument("--skip-ppo", action="store_true", help="only the batch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs", flush=True)
    print(bench_batch(args.repeats), flush=True)
    if not args.skip_ppo:
        print(bench_ppo(args.iterations, args.runs), flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
