"""What the code sandbox costs: one batch of benign programs, and one RLHF-PPO iteration.

    python benchmarks/sandbox_speed.py                     # 30 batches; 2 PPO runs of 40 iterations
    python benchmarks/sandbox_speed.py --repeats 50 --runs 3 --skip-ppo

The budgets (the README's benchmark section): a batch of 64 benign candidates with 4 unit tests each in under 100 ms on
an idle 2-core machine, and an RLHF-PPO iteration no more than 15% slower than before issue 12
(the sandbox rewrite). Both go through public functions that did not change in that rewrite,
so the same script measures the commit before it (``PYTHONPATH=<old checkout> python ...``).

* **batch**: :func:`minippo.lm.code_reward.code_rewards` on the reference bodies of 64 specs
  of :func:`minippo.lm.codetask.make_specs` (64 distinct programs, 4 tests each, all correct,
  new in each repeat): the static guard, the sandbox, and the reward's own bookkeeping.
* **ppo**: :func:`minippo.lm.rlhf.train` with the default ``RLHFConfig`` (40 iterations) from
  the cached SFT model of chapter 8; the time per iteration, and the part of it
  spent in the reward function (sampling, scoring, update all included in the first). Here the
  sandbox meets the programs a policy really writes, many of them again and again.

Wall times are ``time.perf_counter``. CPU times count the sandbox's work wherever it ran: this
process's and its reaped children's (:func:`resource.getrusage`), plus, for a zygote that is
still running between batches, its own and its reaped children's from ``/proc/<pid>/stat``
(in clock ticks, so CPU is given as the mean over all repeats). On a machine shared with other
jobs wall time is inflated by the load, which the script prints before and after; CPU time is
what load changes least. Minimum and median wall times over repeats are printed: the minimum
is the closest to an idle machine.
"""
from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import time

import torch

from minippo.lm import code_reward, codetask, rlhf, sandbox, sft


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, of every child it has waited for, and of the
    sandbox's zygote if one is running (its own time and its reaped children's)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    zygote = getattr(sandbox, "_ZYGOTE", None)  # None before issue 12: one worker per batch, reaped
    for pid in (zygote.pids if zygote is not None else ()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
        except (OSError, ValueError):
            pass
    return total


def measure(fn, repeats: int) -> tuple[list[float], float]:
    """Wall seconds of each of ``repeats`` calls of ``fn``, and their mean CPU seconds."""
    walls, cpu = [], cpu_seconds()
    for _ in range(repeats):
        w = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - w)
    return walls, (cpu_seconds() - cpu) / repeats


def summary(name: str, walls: list[float], cpu: float) -> str:
    return (f"{name}: wall min {min(walls) * 1e3:.1f} ms, median {statistics.median(walls) * 1e3:.1f} ms; "
            f"CPU mean {cpu * 1e3:.1f} ms")


def bench_batch(repeats: int) -> str:
    """Each repeat scores 64 programs never seen before (a comment makes them new), so that the
    sandbox runs every one of them rather than remembering what it returned."""
    specs = codetask.make_specs()[:64]
    calls = iter(range(repeats + 1))

    def batch():
        k = next(calls)
        bodies = [f"{s.reference_body}  # batch {k}" for s in specs]
        out = code_reward.code_rewards(specs, bodies, [True] * len(specs))
        assert out.rewards == [1.0] * len(specs), out.rewards

    batch()  # warm the caches and the file cache, start the sandbox
    return summary("batch of 64 new benign programs x 4 tests", *measure(batch, repeats))


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
    """``runs`` training runs of ``iterations`` iterations (seeds 1, 2, ...) after a short warm-up
    run; the sandbox forgets what programs returned before each run, as a fresh process would."""
    task = codetask.make_task()
    sft_model, _ = sft.pretrained_sft(task.corpus, progress=False)
    prompts = [s.prompt for s in task.train]
    walls, cpu, reward_share, reward_seconds = [], 0.0, [], []
    for run in range(runs + 1):  # run 0 warms up (imports, allocator, first sandbox start)
        config = rlhf.RLHFConfig(iterations=iterations if run else 3)
        getattr(sandbox, "_OUTCOMES", {}).clear()  # (before issue 12 there was nothing to forget)
        reward = TimedReward(task.reward_fn())
        w, c = time.perf_counter(), cpu_seconds()
        rlhf.train(copy.deepcopy(sft_model), prompts, reward, config, seed=run, progress=False)
        wall = time.perf_counter() - w
        if run:
            walls.append(wall / iterations)
            cpu += (cpu_seconds() - c) / iterations / runs
            reward_share.append(reward.seconds / wall)
            reward_seconds.append(reward.seconds / iterations)
    return (summary(f"RLHF-PPO iteration ({runs} runs x {iterations} iterations)", walls, cpu)
            + f"; reward function {statistics.median(reward_seconds) * 1e3:.0f} ms per iteration, "
              f"{statistics.median(reward_share):.1%} of the wall time (medians)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed batches")
    parser.add_argument("--iterations", type=int, default=40, help="PPO iterations per run (40: the default config)")
    parser.add_argument("--runs", type=int, default=2, help="timed PPO runs (after a short warm-up run)")
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
