"""PPO on CartPole-v1: minippo against Stable-Baselines3 with RL-Zoo's tuned settings.

    python benchmarks/cartpole_vs_sb3.py            # seeds 0-2, interleaved, ~1 minute
    python benchmarks/cartpole_vs_sb3.py --seeds 0 1 2 3 4

Both sides:

* one torch thread (``torch.set_num_threads(1)``), CPU;
* the same threshold: the mean return of the last 20 finished episodes reaches 475
  (``History.solved_at`` for minippo; for SB3 a callback that reads the Monitor episode
  returns in ``infos`` at every step, the same 20-episode window);
* the clock starts before the environment and the model are built and stops at the
  environment step at which the threshold is crossed (CPU seconds, ``time.process_time``,
  are printed too: on a shared machine they show the work done, which load barely changes);
* runs interleaved (sb3 seed 0, minippo seed 0, sb3 seed 1, ...), after one untimed warm-up
  run of each, so that imports, lazy initialisation and machine load hit both alike.

SB3 uses RL-Zoo's ``hyperparams/ppo.yml`` entry for CartPole-v1: 8 envs, n_steps 32,
batch 256, gae_lambda 0.8, gamma 0.98, n_epochs 20, ent_coef 0.0, learning rate linear from
1e-3, clip range linear from 0.2, 1e5 timesteps.  minippo uses ``PPOConfig()``, the book's
CartPole defaults (their sources are in ``minippo/ppo.py`` and ``benchmarks/README.md``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

THRESHOLD = 475.0
WINDOW = 20


def run_sb3(seed: int, total_timesteps: int = 100_000) -> dict:
    """SB3 PPO with RL-Zoo's CartPole-v1 hyperparameters until the threshold (or the budget)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class StopAtThreshold(BaseCallback):
        """Collects Monitor episode returns step by step; stops when the last 20 average 475."""

        def __init__(self, t0: float, c0: float):
            super().__init__()
            self.t0, self.c0, self.returns, self.solved = t0, c0, [], None

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.returns.append(info["episode"]["r"])
            last = self.returns[-WINDOW:]
            if len(last) == WINDOW and sum(last) / WINDOW >= THRESHOLD:
                self.solved = (self.num_timesteps, time.perf_counter() - self.t0,
                               time.process_time() - self.c0)
                return False
            return True

    def linear(start: float):
        return lambda progress_remaining: progress_remaining * start  # RL-Zoo's lin_<value>

    t0, c0 = time.perf_counter(), time.process_time()
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
                n_epochs=20, ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2),
                seed=seed, device="cpu", verbose=0)
    callback = StopAtThreshold(t0, c0)
    model.learn(total_timesteps=total_timesteps, callback=callback)
    wall = time.perf_counter() - t0
    env.close()
    steps, seconds, cpu = callback.solved if callback.solved else (None, None, None)
    return {"library": "sb3", "seed": seed, "seconds": seconds, "steps": steps, "cpu": cpu,
            "wall": wall}


def run_minippo(seed: int) -> dict:
    """minippo PPO with the book's CartPole defaults until the threshold (or the budget)."""
    from minippo import ppo

    t0, c0 = time.perf_counter(), time.process_time()
    _, history = ppo.train(ppo.PPOConfig(), seed=seed, progress=False, stop_at_return=THRESHOLD)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    solved = history.solved_at(THRESHOLD, WINDOW)  # seconds measured from inside train()
    steps, seconds = solved if solved else (None, None)
    # cpu covers the whole call, including the update after the threshold: it errs against us
    return {"library": "minippo", "seed": seed, "seconds": seconds, "steps": steps,
            "cpu": cpu if solved else None, "wall": wall}


def warm_up() -> None:
    """One short untimed run of each, so lazy imports (torch._dynamo is imported by the first
    torch.optim.Adam) and first-call costs are paid before any clock starts."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from minippo import ppo

    PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=0), n_steps=32, batch_size=256,
        n_epochs=1, device="cpu").learn(512)
    ppo.train(ppo.PPOConfig(total_steps=2 * ppo.PPOConfig().batch_size), progress=False)


def fmt(x, digits=2):
    return "not reached" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else f"{x:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)

    load_before = os.getloadavg()
    warm_up()
    runs = []
    for seed in args.seeds:
        for run in (run_sb3, run_minippo):
            runs.append(run(seed))
            r = runs[-1]
            print(f"  {r['library']:8s} seed {seed}: {fmt(r['seconds'])} s, "
                  f"{fmt(r['steps'])} steps", flush=True)
    load_after = os.getloadavg()

    print(f"\nPPO on CartPole-v1 to a mean return of {THRESHOLD:g} over the last {WINDOW} episodes "
          f"(1 torch thread, {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after)\n")
    print("| library | seed | seconds to threshold | CPU seconds | env steps to threshold |")
    print("|---|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r['library']} | {r['seed']} | {fmt(r['seconds'])} | {fmt(r['cpu'])} | "
              f"{fmt(r['steps'])} |")
    med = {}
    for lib in ("sb3", "minippo"):
        ok = [r for r in runs if r["library"] == lib and r["steps"] is not None]
        med[lib] = {k: statistics.median(r[k] for r in ok) if ok else None
                    for k in ("seconds", "cpu", "steps")}
        print(f"| **{lib} median** ({len(ok)}/{len(args.seeds)} solved) | | "
              f"**{fmt(med[lib]['seconds'])}** | **{fmt(med[lib]['cpu'])}** | "
              f"**{fmt(med[lib]['steps'] and int(med[lib]['steps']))}** |")
    if med["sb3"]["seconds"] and med["minippo"]["seconds"]:
        print(f"\nminippo reaches the threshold "
              f"{med['sb3']['seconds'] / med['minippo']['seconds']:.1f}x faster in wall-clock "
              f"time ({med['sb3']['cpu'] / med['minippo']['cpu']:.1f}x in CPU time) than "
              f"SB3/RL-Zoo, using {med['minippo']['steps'] / med['sb3']['steps']:.2f}x its "
              "environment steps (medians).")


if __name__ == "__main__":
    main()
