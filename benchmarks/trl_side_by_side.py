"""GRPO and RLOO on the code task, minippo vs Hugging Face TRL, side by side (chapter 10).

    python benchmarks/trl_side_by_side.py                        # seeds 0-2, GRPO and RLOO, both libraries
    python benchmarks/trl_side_by_side.py --seeds 0 1 2 3 4 --iterations 40
    python benchmarks/trl_side_by_side.py --profile              # also: where the CPU time goes (seed 0)

What is compared (``pip install "minippo[trl]"``; CPU, one torch thread, float32):

* **Same start**: the SFT model of ``mp.lm.pretrained_sft(task.corpus, seed=seed)``, which is also
  every run's frozen reference.  TRL gets it converted, weight for weight, to a
  ``GPT2LMHeadModel`` (``minippo.lm.hf.to_hf``) with the character tokenizer as a
  ``PreTrainedTokenizerFast``.
* **Same algorithm and budget**: ``GRPOConfig(iterations=N)`` and ``RLOOConfig(iterations=N)``
  (default N = 20: 1,280 sampled responses); TRL's configs are built from them field by field
  (``minippo.lm.trl_bridge.trl_args``: loss ``grpo``, ``beta`` 0.04 / 0.05, group scaling, same
  learning rate, schedule, clip, gradient clip, epochs and minibatches).  TRL runs with its
  log-prob forward given ``position_ids`` (``trl_bridge.GRPOTrainer`` / ``RLOOTrainer``; without
  them TRL scores left-padded prompts at shifted positions, chapter 10).
* **Same reward**: the composite code reward (syntax 0.3, tests 0.5, quality 0.2, minus 1
  without EOS), tests run in the sandbox; TRL calls it through ``trl_bridge.TRLReward``.
* **Same evaluator**: ``mp.lm.evaluate``, 8 samples per spec at temperature 1 (seed 123), on the
  training specs and on the held-out specs.
* **Clock**: CPU seconds (``time.process_time``) of the training call only: ``train_grpo`` /
  ``train_rloo`` for minippo, ``trainer.train()`` for TRL (model conversion and trainer set-up
  excluded; they are reported separately as TRL's set-up time).  The sandbox workers' CPU time
  is in neither (separate processes; the same programs run in both).  Wall seconds are printed
  too, but on a shared machine they mostly measure the other load.
* **Order**: one untimed warm-up run of each library (lazy imports, first optimizer), then for
  each seed, each method: TRL, then minippo.  The load average is printed before and after.

``--profile`` reruns seed 0 of each method and library and splits the CPU time of the training
call into phases, by timing the functions that do each (``PhaseTimer``; a profiler such as
cProfile would inflate the Python-heavy parts, which are most of the difference): sampling
(``generate``), reward (in this process: building programs, talking to the sandbox), the
forward passes that score tokens (old policy, reference, and the loss's own), backward,
optimizer step with gradient clipping, and the rest (the training loop itself: for TRL the
``Trainer``, Accelerate, batching and metric bookkeeping).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import torch

import minippo as mp
from minippo.lm import alternatives, trl_bridge

METHODS = {"grpo": (alternatives.GRPOConfig, alternatives.train_grpo),
           "rloo": (alternatives.RLOOConfig, alternatives.train_rloo)}

def phase_targets() -> dict[str, list[tuple[object, str]]]:
    """phase -> the (owner, attribute) functions whose CPU time makes up the phase, in both libraries."""
    import transformers
    import trl

    from minippo.lm import codetask

    return {
        "sampling": [(mp.lm.rlhf, "generate"), (transformers.GenerationMixin, "generate")],
        "reward": [(codetask.CodeReward, "__call__")],
        "log-prob forwards": [(alternatives, "response_logprobs"),
                              (trl.GRPOTrainer, "_get_per_token_logps_and_entropies"),
                              (trl.RLOOTrainer, "_get_per_token_logps_and_entropies")],
        "backward": [(torch.Tensor, "backward")],
        "optimizer step": [(torch.optim.Adam, "step"), (torch.optim.AdamW, "step"),
                           (torch.nn.utils, "clip_grad_norm_")],
    }


class PhaseTimer:
    """Adds up the CPU time spent inside each phase's functions while it is active (``with``).

    The functions are wrapped for the duration only; a phase function called inside another
    phase counts for the outer one (nothing is counted twice).  The wrappers cost a few
    microseconds per call, a few hundred calls per run: unlike a profiler, they leave the
    Python-heavy parts of either library at their real cost.
    """

    def __init__(self):
        self.seconds = dict.fromkeys(phase_targets(), 0.0)
        self._active = None
        self._saved = []

    def _wrap(self, phase, original):
        def timed(*args, **kwargs):
            if self._active is not None:
                return original(*args, **kwargs)
            self._active, start = phase, time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.process_time() - start
                self._active = None
        return timed

    def __enter__(self):
        for phase, targets in phase_targets().items():
            for owner, name in targets:
                original = owner.__dict__[name] if name in vars(owner) else getattr(owner, name)
                self._saved.append((owner, name, original))
                setattr(owner, name, self._wrap(phase, getattr(owner, name)))
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


def train(library: str, method: str, sft, prompts, reward, iterations: int, seed: int):
    """``(policy, CPU s of the training call, wall s, set-up CPU s)`` of one run."""
    config_cls, train_fn = METHODS[method]
    config = config_cls(iterations=iterations)
    if library == "minippo":
        policy = copy.deepcopy(sft)
        cpu, wall = time.process_time(), time.perf_counter()
        train_fn(policy, prompts, reward, config, seed=seed, progress=False)
        return policy, time.process_time() - cpu, time.perf_counter() - wall, 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    policy, history = trl_bridge.train_trl(sft, prompts, reward, config, seed=seed)
    train_cpu = history["time/train_cpu_seconds"][0]
    total_cpu = time.process_time() - cpu
    return policy, train_cpu, time.perf_counter() - wall, total_cpu - train_cpu


def evaluate(policy, sft, task, reward) -> dict:
    out = {}
    for split, specs in (("train", task.train), ("heldout", task.heldout)):
        ev = mp.lm.evaluate(policy, [s.prompt for s in specs], reward, reference=sft, samples_per_prompt=8, seed=123)
        out[split] = ev["code/avg_test_pass_rate"]
        out[f"kl_{split}"] = ev["rlhf/kl_to_ref"]
    return out


def profile_phases(library: str, method: str, sft, prompts, reward, iterations: int) -> dict:
    """CPU seconds per phase of one training call (seed 0), and the ``total``."""
    config_cls, train_fn = METHODS[method]
    config = config_cls(iterations=iterations)
    if library == "minippo":
        policy = copy.deepcopy(sft)
        with PhaseTimer() as timer:
            start = time.process_time()
            train_fn(policy, prompts, reward, config, seed=0, progress=False)
            total = time.process_time() - start
    else:
        with tempfile.TemporaryDirectory() as d, trl_bridge.quiet_transformers():
            trainer = trl_bridge.make_trainer(sft, prompts, reward, config, d, seed=0)
            with PhaseTimer() as timer:
                start = time.process_time()
                trainer.train()
                total = time.process_time() - start
    phases = dict(timer.seconds)
    phases["rest (training loop, framework)"] = total - sum(phases.values())
    phases["total"] = total
    return phases


def markdown_table(rows: list[dict]) -> str:
    head = "| method | library | seed | CPU s (training call) | wall s | train tests after | held-out after | KL to SFT |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method'].upper()} | {r['library']} | {r['seed']} | {r['cpu']:.2f} | {r['wall']:.2f} | "
                     f"{r['train']:.1%} | {r['heldout']:.1%} | {r['kl_train']:.2f} |")
    for method in dict.fromkeys(r["method"] for r in rows):
        for library in ("TRL", "minippo"):
            sel = [r for r in rows if r["method"] == method and r["library"] == library]
            if sel:
                lines.append(f"| **{method.upper()} mean** | **{library}** | | "
                             f"**{statistics.mean(r['cpu'] for r in sel):.2f}** | "
                             f"**{statistics.mean(r['wall'] for r in sel):.2f}** | "
                             f"**{statistics.mean(r['train'] for r in sel):.1%}** | "
                             f"**{statistics.mean(r['heldout'] for r in sel):.1%}** | "
                             f"**{statistics.mean(r['kl_train'] for r in sel):.2f}** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["grpo", "rloo"], choices=list(METHODS))
    parser.add_argument("--iterations", type=int, default=20, help="iterations of 64 responses (default 20)")
    parser.add_argument("--profile", action="store_true", help="also profile seed 0 of each method and library")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    task = mp.lm.make_task()
    reward = task.reward_fn()
    prompts = [s.prompt for s in task.train]
    sfts = {seed: mp.lm.pretrained_sft(task.corpus, seed=seed, progress=False)[0] for seed in args.seeds}
    for library in ("TRL", "minippo"):  # warm-up: imports, first optimizer, first sandbox worker
        train(library, args.methods[0], sfts[args.seeds[0]], prompts, reward, 3, 0)
    rows = []
    for seed in args.seeds:
        for method in args.methods:
            for library in ("TRL", "minippo"):
                policy, cpu, wall, setup = train(library, method, sfts[seed], prompts, reward, args.iterations, seed)
                row = {"method": method, "library": library, "seed": seed, "cpu": cpu, "wall": wall, "setup": setup,
                       **evaluate(policy, sfts[seed], task, reward)}
                rows.append(row)
                print(f"{method} {library:7s} seed {seed}: {cpu:.2f} CPU s ({wall:.1f} wall s, set-up {setup:.2f} "
                      f"CPU s), tests {row['train']:.1%} train / {row['heldout']:.1%} held-out", flush=True)
    load_after = os.getloadavg()
    print()
    print(markdown_table(rows))
    print()
    for method in args.methods:
        cpu = {lib: statistics.mean(r["cpu"] for r in rows if r["method"] == method and r["library"] == lib)
               for lib in ("TRL", "minippo")}
        setup = statistics.mean(r["setup"] for r in rows if r["method"] == method and r["library"] == "TRL")
        print(f"{method.upper()}: TRL / minippo CPU time of the training call = {cpu['TRL'] / cpu['minippo']:.2f}x "
              f"(TRL's set-up, conversion and saving: {setup:.2f} CPU s more)")
    print(f"SFT {sum(1 for _ in args.seeds)} seed(s): train tests "
          + ", ".join(f"{evaluate(sfts[s], sfts[s], task, reward)['train']:.1%}" for s in args.seeds))
    print(f"load average (1, 5, 15 min): before {load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f}, "
          f"after {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f}")
    if args.profile:
        print("\nCPU seconds by phase of the training call (seed 0):\n")
        profiles = {(m, lib): profile_phases(lib, m, sfts[args.seeds[0]], prompts, reward, args.iterations)
                    for m in args.methods for lib in ("TRL", "minippo")}
        phases = list(next(iter(profiles.values())))
        print("| phase | " + " | ".join(f"{m.upper()} {lib}" for m, lib in profiles) + " |")
        print("|---|" + "---:|" * len(profiles))
        for phase in phases:
            cells = [f"{p[phase]:.2f} ({p[phase] / p['total']:.0%})" for p in profiles.values()]
            print(f"| {phase} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
