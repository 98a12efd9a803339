"""Time to held-out accuracy on a recipe: ``llmrl train`` against TRL's GRPOTrainer on identical settings.

Both sides train the recipe (default recipes/smollm2_arithmetic.yaml; ``--model DIR`` is its ``model.path``; without
one, a tiny random Llama written here, for a smoke run) from the same weights, each in its own child process with
one torch thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``), pinned to its own core with ``taskset`` when
the machine has two or more (``--sequential``: one after the other, unpinned). Every ``--eval-every`` steps, and at
step 0, both are scored by THE SAME evaluator, ``llmrl.train.run.evaluate_run`` (the recipe's ``eval``: greedy on
its held-out prompts, the task's reward and verdict) on the current weights; evaluation time is excluded from the
training time, which is counted both as wall seconds and as CPU seconds (fair when other jobs share the
machine): ``time.process_time`` of the trainer plus its child processes' (llmrl's reward workers; psutil),
``cpu_self`` in the JSON without them. Training time starts after the step-0 evaluation (model loading and setup excluded
on both sides).

llmrl side: :func:`llmrl.trainers.run_trainer` on the recipe (``steps``, ``eval.every``, ``seed``, ``threads=1``
overridden), i.e. exactly ``llmrl train``; its evaluations are timed by wrapping ``evaluate_run`` (the loop's
and ``finish_run``'s, which scores the last step), and its checkpoint saves are kept off the clock too.

TRL side: ``GRPOTrainer`` (settings from benchmarks/rl_step.py's ``grpo_config``) mapped from the recipe: the
same training prompts in the same order (the recipe's ``DataStream`` order, ``shuffle_dataset=False``), rendered
by llmrl (same chat template / system prompt; TRL stops at the tokenizer's EOS, SmolLM2's ``<|im_end|>``), reward
= the task's reward functions on the completion text, per_device_train_batch_size = prompts_per_step x
samples_per_prompt with num_generations = samples_per_prompt (one generation batch per optimizer step),
gradient_accumulation_steps 1, num_iterations = algo.epochs, max_completion_length = rollout.max_new_tokens,
temperature / top_p / top_k as the recipe, beta = algo.kl_coef (0 in the recipe: no reference model on either
side), loss_type "dapo" (token mean, = algo.loss_agg token-mean), epsilon / epsilon_high = ppo_clip's eps_low /
eps_high, scale_rewards "group" (GRPO: (r - mean) / std per group), AdamW with the recipe's lr, betas, eps and
weight decay, constant schedule, warm-up, max_grad_norm = optim.grad_clip, seed. Only what both allow is shared:
the random streams (sampling) differ.

Reported: one table (per evaluation: step, training wall s, CPU s and accuracy of each), then the time of each to
first reach the common target accuracy (``--target``, default the lower of the two best accuracies, or the
higher where one side never improved on step 0: :func:`default_target`; resolution: the evaluation points) and the ratio llmrl / TRL against the target ratio (<= 0.5: PASS, else MISS).

    python benchmarks/time_to_accuracy.py --model /work/cache/smollm2-hf            # 20 steps, eval every 5
    python benchmarks/time_to_accuracy.py --steps 2 --eval-every 1 --set task.train_size=64 eval.size=8  # tiny
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "smollm2_arithmetic.yaml"
TARGET_RATIO = 0.5  # issue 14: llmrl's time to the same held-out accuracy <= 0.5x TRL's
TINY_OVERRIDES = ["model.intended=null", "task.train_size=64", "task.test_size=16", "eval.size=16"]


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds of this process and its child processes, of this process alone): ``time.process_time`` plus
    the live descendants' user + system time (psutil; llmrl's reward workers are processes) plus reaped children."""
    own = time.process_time()
    t = os.times()
    kids = t.children_user + t.children_system
    with contextlib.suppress(ImportError, OSError):
        import psutil

        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                kids += c.user + c.system
    return own + kids, own


class TrainClock:
    """Training time (wall, CPU of the process tree, CPU of this process) that stops while paused (evaluations);
    it starts at the first resume."""

    def __init__(self) -> None:
        self.total = [0.0, 0.0, 0.0]
        self.since: tuple[float, ...] | None = None

    @staticmethod
    def now() -> tuple[float, ...]:
        return (time.perf_counter(), *cpu_seconds())

    def pause(self) -> tuple[float, ...]:
        """Stop the clock; the (wall, CPU, own CPU) seconds trained so far."""
        if self.since is not None:
            self.total = [t + b - a for t, a, b in zip(self.total, self.since, self.now(), strict=True)]
            self.since = None
        return tuple(self.total)

    def resume(self) -> None:
        self.since = self.now()


def timed_evaluator(clock: TrainClock, records: list[dict[str, float]], evaluate: Any, save: Path | None = None) -> Any:
    """``evaluate(run, cfg, step)`` wrapped: the clock paused around it, one record per step evaluated (all of
    them rewritten to ``save`` after each, so that a run cut short keeps its evaluations)."""

    def run_eval(run: Any, cfg: Any, step: int) -> dict[str, float]:
        wall, cpu, cpu_self = clock.pause()
        out = evaluate(run, cfg, step)
        if not any(r["step"] == step for r in records):
            records.append({"step": step, "wall": wall, "cpu": cpu, "cpu_self": cpu_self,
                            "accuracy": float(out["accuracy"])})
            if save is not None:
                save.write_text(json.dumps({"records": records}))
        clock.resume()
        return out

    return run_eval


def load_recipe(args: argparse.Namespace, output_dir: str) -> Any:
    from llmrl.config import load_config

    overrides = [f"model.path={args.model}", f"steps={args.steps}", f"eval.every={args.eval_every}",
                 f"seed={args.seed}", "threads=1", f"output_dir={output_dir}", *args.set]
    return load_config(args.recipe, overrides)


def child_llmrl(args: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    """``llmrl train`` on the recipe in this process, its evaluations timed out of the training clock."""
    import llmrl.rl.loop as loop
    import llmrl.train.run as run_module
    from llmrl.trainers import run_trainer

    cfg = load_recipe(args, output_dir)
    clock, records = TrainClock(), []
    evaluate = timed_evaluator(clock, records, loop.evaluate_run, Path(args.child_out))
    loop.evaluate_run = run_module.evaluate_run = evaluate  # type: ignore[assignment]  # the last: finish_run's
    save = loop.save_checkpoint

    def save_paused(*a: Any, **kw: Any) -> Any:  # checkpoints are not training (TRL saves none here)
        clock.pause()
        try:
            return save(*a, **kw)
        finally:
            clock.resume()

    loop.save_checkpoint = save_paused  # type: ignore[assignment]
    with contextlib.redirect_stdout(sys.stderr):
        run_trainer(cfg, overwrite=True)
    return {"records": records}


def child_trl(args: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    """TRL's GRPOTrainer on the recipe's settings (module docstring), evaluated by llmrl's ``evaluate_run``."""
    import warnings

    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from datasets import Dataset
    from rl_step import grpo_config, quiet, trl_reward, trl_rows
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from llmrl.models.loading import load_model, load_tokenizer
    from llmrl.train.build import build_data, build_generator, build_task
    from llmrl.train.collect import DataStream
    from llmrl.train.run import RunParts, evaluate_run

    quiet()
    cfg = load_recipe(args, output_dir)
    a, r, o = cfg.algo, cfg.rollout, cfg.optim
    refused = {"algo.advantage": (a.advantage, "grpo"), "algo.loss": (a.loss, "ppo_clip"),
               "algo.loss_agg": (a.loss_agg, "token-mean"), "algo.minibatches": (a.minibatches, 1),
               "model.lora.enabled": (cfg.model.lora.enabled, False), "rollout.stop": (r.stop, []),
               "sft.steps": (cfg.sft.steps, 0), "rollout.dynamic_sampling": (r.dynamic_sampling, False)}
    for key, (value, supported) in refused.items():
        if value != supported:
            raise SystemExit(f"{key}: {value!r} has no TRL mapping here (supported: {supported!r})")
    task = build_task(cfg)
    train, test = build_data(cfg, task)
    tok, model = load_tokenizer(cfg.model.path), load_model(cfg.model.path, dtype=cfg.model.dtype)
    stream = DataStream(train, cfg.seed)  # the prompts llmrl draws, in its order
    samples = [s for _ in range(cfg.steps) for s in stream.next(r.prompts_per_step)]
    rows = trl_rows(tok, samples, cfg.model.chat_template)
    evaluator = RunParts(model=model, tokenizer=tok, generator=build_generator(model, tok, r.backend), task=task,
                         train=train, test=test)  # what llmrl's run evaluates with, on TRL's (shared) model
    clock, records = TrainClock(), []
    evaluate = timed_evaluator(clock, records, evaluate_run, Path(args.child_out))

    def eval_now(step: int) -> None:
        training = model.training
        model.eval()
        evaluate(evaluator, cfg, step)
        model.train(training)

    class EvalEvery(TrainerCallback):
        def on_train_begin(self, targs: Any, state: Any, control: Any, **kw: Any) -> None:
            eval_now(0)

        def on_step_end(self, targs: Any, state: Any, control: Any, **kw: Any) -> None:
            step = state.global_step
            if step % cfg.eval.every == 0 or step == cfg.steps:
                eval_now(step)

    eps = a.loss_options
    settings = grpo_config(
        output_dir, per_device_train_batch_size=r.prompts_per_step * r.samples_per_prompt,
        num_generations=r.samples_per_prompt, gradient_accumulation_steps=1, num_iterations=a.epochs,
        max_steps=cfg.steps, max_completion_length=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
        top_k=r.top_k, beta=a.kl_coef, loss_type="dapo", epsilon=eps.get("eps_low", 0.2),
        epsilon_high=eps.get("eps_high", eps.get("eps_low", 0.2)), scale_rewards="group", learning_rate=o.lr,
        lr_scheduler_type=o.schedule, warmup_steps=o.warmup_steps, weight_decay=o.weight_decay,
        adam_beta1=o.betas[0], adam_beta2=o.betas[1], adam_epsilon=o.eps, max_grad_norm=o.grad_clip, seed=cfg.seed,
    )  # fmt: skip
    trainer = GRPOTrainer(model=model, reward_funcs=trl_reward(task), args=settings,
                          train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[EvalEvery()])
    with contextlib.redirect_stdout(sys.stderr):
        trainer.train()
    return {"records": records}


def first_reach(records: list[dict[str, float]], target: float) -> dict[str, float] | None:
    return next((r for r in records if r["accuracy"] >= target - 1e-12), None)


def default_target(ours: list[dict[str, float]], trl: list[dict[str, float]]) -> float:
    """The lower of the two best accuracies; when that is no better than the start (one side never improved on
    its step-0 accuracy), the higher one: the side that never got there is then reported as not reaching it."""
    start = max(ours[0]["accuracy"], trl[0]["accuracy"])
    bests = sorted((max(r["accuracy"] for r in ours), max(r["accuracy"] for r in trl)))
    return bests[0] if bests[0] > start else bests[1]


def compare(results: dict[str, dict[str, Any]], target: float | None) -> dict[str, Any]:
    """The common target, each side's first evaluation at or above it, and the llmrl / TRL time ratios. Where TRL
    never reached the target, its time to it is more than its whole training time, so llmrl's time over that is
    an upper bound of the ratio (``bound``); where llmrl never reached it, the ratio is infinite."""
    ours, trl = results["llmrl"]["records"], results["trl"]["records"]
    if target is None:
        target = default_target(ours, trl)
    hit = {"llmrl": first_reach(ours, target), "trl": first_reach(trl, target)}
    out: dict[str, Any] = {"target": target, "reached": hit, "bound": hit["llmrl"] is not None and hit["trl"] is None}
    for kind in ("wall", "cpu"):
        a, b = hit["llmrl"], hit["trl"] or trl[-1]
        if a is None:
            ratio = float("inf")  # llmrl never reached it
        elif b[kind] > 0:
            ratio = a[kind] / b[kind]
        else:
            ratio = float("nan")  # both already there at step 0 (or TRL has no training time yet)
        out[f"ratio_{kind}"] = ratio
    out["pass"] = {k: out[f"ratio_{k}"] <= TARGET_RATIO for k in ("wall", "cpu")}
    out["verdict"] = {k: "PASS" if ok else "UNDECIDED (TRL did not reach the target)" if out["bound"] else "MISS"
                      for k, ok in out["pass"].items()}
    return out


def table(results: dict[str, dict[str, Any]], cmp: dict[str, Any]) -> str:
    by_step: dict[int, dict[str, dict[str, float]]] = {}
    for name in ("llmrl", "trl"):
        for r in results[name]["records"]:
            by_step.setdefault(int(r["step"]), {})[name] = r
    lines = ["| step | llmrl wall s | llmrl CPU s | llmrl acc | TRL wall s | TRL CPU s | TRL acc |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for step in sorted(by_step):
        cells = []
        for name in ("llmrl", "trl"):
            r = by_step[step].get(name)
            cells += [f"{r['wall']:.1f}", f"{r['cpu']:.1f}", f"{r['accuracy']:.3f}"] if r else ["-", "-", "-"]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    last = {n: results[n]["records"][-1] for n in ("llmrl", "trl")}
    lines.append(f"\nCPU s: the trainer process and its children (llmrl's reward workers); the trainer process alone "
                 f"at the last evaluation: llmrl {last['llmrl'].get('cpu_self', 0.0):.1f} s, "
                 f"TRL {last['trl'].get('cpu_self', 0.0):.1f} s")
    lines.append(f"common target accuracy {cmp['target']:.3f}")
    for name, label in (("llmrl", "llmrl"), ("trl", "TRL")):
        h = cmp["reached"][name]
        r = results[name]["records"][-1]
        lines.append(f"{label}: " + (f"first at step {h['step']}: {h['wall']:.1f} s wall, {h['cpu']:.1f} s CPU" if h
                                     else f"never reached in {r['step']} steps ({r['wall']:.1f} s wall, "
                                          f"{r['cpu']:.1f} s CPU)"))
    for kind in ("wall", "cpu"):
        ratio = cmp[f"ratio_{kind}"]
        lines.append(f"time to target llmrl / TRL ({kind}): {'<= ' if cmp['bound'] else ''}{ratio:.2f}x (target "
                     f"<= {TARGET_RATIO}x: {cmp['verdict'][kind]})")
    return "\n".join(lines)


def spawn(args: argparse.Namespace, side: str, model_dir: str, tmp: Path, cpu: int | None) -> subprocess.Popen[str]:
    out = tmp / f"{side}.json"
    cmd = [sys.executable, __file__, "--child", side, "--child-out", str(out), "--model", model_dir,
           "--recipe", str(args.recipe), "--steps", str(args.steps), "--eval-every", str(args.eval_every),
           "--seed", str(args.seed), "--set", *args.set]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(tmp / f"{side}.log", "w")  # noqa: SIM115 - closed with the process in run_both
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)


def run_both(args: argparse.Namespace, model_dir: str, tmp: Path) -> dict[str, dict[str, Any]]:
    pin = not args.sequential and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    results: dict[str, dict[str, Any]] = {}
    procs: dict[str, subprocess.Popen[str]] = {}
    for i, side in enumerate(("llmrl", "trl")):
        procs[side] = spawn(args, side, model_dir, tmp, i if pin else None)
        if args.sequential:
            procs[side].wait()
    for side, proc in procs.items():
        if proc.wait():
            tail = (tmp / f"{side}.log").read_text()[-3000:]
            why = " (SIGKILL: out of memory?)" if proc.returncode == -9 else ""
            raise RuntimeError(f"{side} child failed (rc {proc.returncode}{why}; evaluations so far in "
                               f"{tmp / (side + '.json')} with --logs):\n{tail}")
        results[side] = json.loads((tmp / f"{side}.json").read_text())
    results["mode"] = {"concurrent": not args.sequential, "pinned": pin}  # type: ignore[assignment]
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.environ.get("LLMRL_SMOLLM2_DIR"),
                   help="the recipe's model.path (default $LLMRL_SMOLLM2_DIR; none: a tiny random Llama, smoke only)")
    p.add_argument("--recipe", default=str(RECIPE))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=5, help="evaluate both every K steps (and at step 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=None, help="common accuracy (default: lower of the two bests)")
    p.add_argument("--sequential", action="store_true", help="run TRL after llmrl, unpinned (default: concurrent, "
                   "one core each)")
    p.add_argument("--set", nargs="*", default=[], help="extra dotted recipe overrides for both sides")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--logs", default=None, help="keep the children's logs and per-evaluation JSON in this folder")
    p.add_argument("--report", default=None, help="only print the table from a --logs folder")
    p.add_argument("--child", choices=("llmrl", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.eval_every < 1:
        p.error("need --steps >= 1 and --eval-every >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        import torch

        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory() as out:
            res = (child_llmrl if args.child == "llmrl" else child_trl)(args, out)
        res["threads"] = torch.get_num_threads()
        Path(args.child_out).write_text(json.dumps(res))
        return res
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    if args.report:  # the table from a kept --logs DIR (e.g. of a run cut short: the evaluations it reached)
        results = {side: json.loads((Path(args.report) / f"{side}.json").read_text()) for side in ("llmrl", "trl")}
        cmp = compare(results, args.target)
        print(table(results, cmp))
        return {**results, "compare": cmp}
    with contextlib.ExitStack() as stack:
        tmp = Path(args.logs) if args.logs else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        tmp.mkdir(parents=True, exist_ok=True)
        model_dir = args.model
        if not model_dir:  # smoke: a tiny random Llama both sides load
            from llmrl.models.tiny import save_tiny_model

            model_dir = str(save_tiny_model(tmp / "tiny", seed=args.seed))
            args.set = [*TINY_OVERRIDES, *args.set]
        results = run_both(args, model_dir, tmp)
    cmp = compare(results, args.target)
    mode = results.pop("mode")
    how = ("concurrently, pinned with taskset to cores 0 / 1" if mode["pinned"] else "concurrently, unpinned") \
        if mode["concurrent"] else "one after the other"
    print(f"# time to accuracy, {Path(args.recipe).name}, model {args.model or 'tiny random Llama'}, seed "
          f"{args.seed}, {args.steps} steps, eval every {args.eval_every}; llmrl and TRL each 1 thread, {how}; "
          f"load average {'/'.join(f'{x:.1f}' for x in load0)} at the start\n")
    print(table(results, cmp))
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    print(f"\nwall {wall:.0f} s in all (evaluations and loading included); load average "
          f"{'/'.join(f'{x:.1f}' for x in load1)} at the end")
    out = {**results, "compare": cmp, "mode": mode, "wall_seconds": wall, "load_start": load0, "load_end": load1}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
