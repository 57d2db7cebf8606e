"""One measurement run on a lent GPU machine (issue 17 item 4), all bf16 on the GPU. Run it through
``bench/gpu_check.sh``, which installs the carried wheels and stops it after 5 minutes.

    python bench/gpu_check.py --out DIR [--budget-s 280] [--dry-run] [--json BENCH.json]

Each figure is appended to OUT/figures.jsonl (one JSON object a line) and printed the moment it is
measured, so a run killed at its time limit keeps what it had; with --json, BENCH.json (every bench
script's format, bench/_common.py) is rewritten whole at each figure too. The steps, most valuable first:

1. chunk    π0 and π0.5 (presets pi0, pi05: full size, random bf16 weights, the byte tokenizer with the
            preset's vocabulary standing in for PaliGemma's, as bench/full_size.py): latency of one
            action chunk (10 Euler steps) at w = 1 and w = 2 (both branches), batch 1 and 8, two
            224x224 cameras; median of the timed runs after warm-up, torch.cuda.synchronize around each;
2. train    training step time (median after one warm-up step) and peak GPU memory
            (torch.cuda.max_memory_allocated, reset before the policy is built) at batch 8, bf16
            weights with fp32 masters, gradient checkpointing, single device: LoRA (train.lora_*
            defaults at rank 16, attached as the trainer does) and expert-only; bench/full_size.py's step;
3. collect  built-in env collection with the full-size random π0 at w = 1: the rollout engine in this
            process (the policy already on the GPU: no checkpoint load), env-steps/s per worker count,
            worker start-up included, and the engine's time split;
4. fsdp     the real CLI: a scripted built-in store (`cfgrl collect --policy scripted:0.3`), labelled for
            the random π0 written as a checkpoint, then `torchrun --nproc_per_node 1 -m cfgrl.cli
            train ... -o train.strategy=fsdp` (bf16, batch 8, gradient checkpointing): samples/s per
            step from RUN/metrics.jsonl and the most GPU memory nvidia-smi saw. A run that fails (an
            unknown setting, say) is recorded as its error line; the run is stopped once its last
            step is logged, before it writes its ~46 GB checkpoint.

--dry-run: the same steps on the CPU with the tiny presets (tiny, pi05_tiny) and fewer runs, to check
the script on a machine without a GPU. Only the standard library is imported at the top: the
rollout workers are spawned and import this module again.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BATCHES = (1, 8)
GUIDANCE = (1.0, 2.0)
NUM_STEPS = 10
TRAIN_BATCH = 8
REGIMES = ("lora", "expert_only")


@dataclass(frozen=True)
class Plan:
    device: str
    presets: tuple[str, ...]  # π0 first, then π0.5
    warmup: int  # untimed chunks per setting
    runs: int  # timed chunks per setting
    train_runs: int  # timed steps after one warm-up step
    collect_workers: tuple[int, ...]
    collect_groups: int  # of collect_group_size episodes each
    collect_group_size: int
    fsdp_episodes: int
    fsdp_steps: int


GPU = Plan("cuda", ("pi0", "pi05"), warmup=2, runs=5, train_runs=3, collect_workers=(8, 16), collect_groups=4,
           collect_group_size=8, fsdp_episodes=16, fsdp_steps=4)
DRY = Plan("cpu", ("tiny", "pi05_tiny"), warmup=1, runs=2, train_runs=2, collect_workers=(2,), collect_groups=1,
           collect_group_size=4, fsdp_episodes=8, fsdp_steps=2)


# What tells one figure from another of the same step and name, in its name in the --json file
BENCH_CONTEXT = ("preset", "regime", "batch", "w", "workers")


class Figures:
    """Appends each figure to ``figures.jsonl`` at once (and prints it); ``at_s``: seconds since the start.
    ``bench``: with --json, (bench/_common.py's Figures, the file, the arguments): each figure goes there too."""

    def __init__(self, out: Path, budget_s: float, bench: tuple | None = None):
        self.path = out / "figures.jsonl"
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.bench = bench

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def add(self, step: str, name: str, value, unit: str = "", **context) -> None:
        record = {"step": step, "name": name, "value": value, "unit": unit, **context,
                  "at_s": round(time.monotonic() - self.started, 1)}
        line = json.dumps(record)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        print(line, flush=True)
        if self.bench is not None:
            self.add_to_bench(record)

    def add_to_bench(self, record: dict) -> None:
        """The figure in the --json file, a chunk at w = 2 against the same chunk at w = 1; the file is
        rewritten whole, so a run stopped at its limit keeps what it had there too."""
        bench, path, args = self.bench
        known = {row["name"] for row in bench.rows}
        name, n = bench_name(record), 1
        while name in known:  # a second error or skip of the same step and context: numbered, not lost
            n += 1
            name = f"{bench_name(record)} #{n}"
        baseline = bench_name({**record, "w": 1.0}) if record["name"] == "chunk_latency" and record.get("w") != 1.0 else None
        bench.add(name, record["value"], record["unit"], vs=baseline if baseline in known else ())
        bench.write(path, args, say=False)  # figures.jsonl's line above says enough, at every figure

    def attempt(self, step: str, work: Callable[[], None], **context) -> None:
        """Run one measurement; a failure becomes its figure (its last line) and the run goes on."""
        if self.left_s() <= 0:
            self.add(step, "skipped", "out of time", **context)
            return
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - every failure is a finding here, none may stop the run
            traceback.print_exc()
            last = (str(exc).strip().splitlines() or [""])[-1]
            self.add(step, "error", f"{type(exc).__name__}: {last}", **context)
        finally:
            release_memory()


def bench_name(record: dict) -> str:
    context = ", ".join(f"{key} {record[key]:g}" if isinstance(record[key], float) else f"{key} {record[key]}"
                        for key in BENCH_CONTEXT if key in record)
    return f"{record['step']} {record['name']}" + (f" ({context})" if context else "")


def bench_helpers():
    """bench/full_size.py, imported late (it imports torch; spawned rollout workers import this module)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import full_size

    return full_size


def release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def builtin_cameras() -> tuple[str, ...]:
    """The built-in env's cameras: every policy here is shaped so that the env and the CLI can run it too."""
    from cfgrl.config import EnvConfig
    from cfgrl.rollout.plan import env_info

    return tuple(env_info(EnvConfig()).camera_names)


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed(work: Callable[[], object], warmup: int, runs: int, device: str) -> list[float]:
    """Seconds of each timed run of ``work`` after ``warmup`` untimed ones, the device synchronised around each."""
    for _ in range(warmup):
        work()
    seconds = []
    for _ in range(runs):
        synchronize(device)
        started = time.perf_counter()
        work()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def ms(seconds: list[float]) -> dict:
    return {"value": round(statistics.median(seconds) * 1e3, 2), "runs_ms": [round(s * 1e3, 2) for s in seconds]}


def reset_peak(device: str) -> float | None:
    """Restart the peak count; returns what is allocated already (GiB), which the peak includes."""
    import torch

    if device != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats()
    return round(torch.cuda.memory_allocated() / 2**30, 2)


def peak_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


# -- 1. chunk latency ----------------------------------------------------------------------------------
def chunk_latency(figures: Figures, plan: Plan, preset: str, cameras: tuple[str, ...]) -> None:
    helpers = bench_helpers()
    policy = helpers.random_policy(preset, cameras, plan.device).eval()
    policy.condition_trained = True  # w = 2 runs both branches, as a trained policy does
    figures.add("chunk", "parameters", round(sum(p.numel() for p in policy.parameters()) / 1e6, 1), "M", preset=preset)
    for batch in BATCHES:
        obs = helpers.observation(batch, cameras, plan.device)
        for w in GUIDANCE:
            def chunk(w=w):
                return policy.sample_actions(obs, cfg_scale=w, num_steps=NUM_STEPS)

            seconds = timed(chunk, plan.warmup, plan.runs, plan.device)
            figures.add("chunk", "chunk_latency", unit="ms", preset=preset, batch=batch, w=w, steps=NUM_STEPS, **ms(seconds))


# -- 2. training step ----------------------------------------------------------------------------------
def train_step(figures: Figures, plan: Plan, preset: str, regime: str, cameras: tuple[str, ...]) -> None:
    from cfgrl.config import TrainConfig
    from cfgrl.policy import lora
    from cfgrl.train.precision import trainable

    helpers = bench_helpers()
    before = reset_peak(plan.device)
    policy = helpers.random_policy(preset, cameras, plan.device)
    t = TrainConfig(lora_rank=16, gradient_checkpointing=True) if regime == "lora" else \
        TrainConfig(train_expert_only=True, gradient_checkpointing=True)
    if t.lora_rank:  # the trainer's settings (precision.Adapters), without its hash of the base weights
        lora.attach(policy, lora.LoraSettings(t.lora_rank, t.lora_alpha, t.lora_dropout, tuple(t.lora_targets)))
    params = trainable(policy, t)
    policy.to(plan.device).train()
    step = helpers.make_step(policy, params, TRAIN_BATCH)
    seconds = timed(step, 1, plan.train_runs, plan.device)
    context = {"preset": preset, "regime": regime, "batch": TRAIN_BATCH, "gradient_checkpointing": True,
               "trained_m": round(sum(p.numel() for p in params.values()) / 1e6, 2)}
    figures.add("train", "step_time", unit="ms", **context, **ms(seconds))
    if plan.device == "cuda":
        figures.add("train", "peak_memory", peak_gib(plan.device), "GiB", **context, allocated_before_gib=before)


# -- 3. collection -------------------------------------------------------------------------------------
def collection(figures: Figures, plan: Plan, cameras: tuple[str, ...]) -> None:
    from cfgrl.config import Config
    from cfgrl.rollout.engine import run_episodes
    from cfgrl.rollout.plan import env_info
    from cfgrl.rollout.plan import plan as plan_episodes

    cfg = Config()
    cfg.collect.groups, cfg.collect.group_size = plan.collect_groups, plan.collect_group_size
    specs = plan_episodes(cfg, env_info(cfg.env), 0, 1)
    policy = bench_helpers().random_policy(plan.presets[0], cameras, plan.device).eval()
    for workers in plan.collect_workers:
        def collect(workers=workers):
            steps = 0

            def count(spec, episode) -> None:
                nonlocal steps
                steps += len(episode.action)

            printed = io.StringIO()
            started = time.perf_counter()
            with contextlib.redirect_stdout(printed):  # the engine prints its time split there
                run_episodes(cfg.env, policy, specs, cfg.inference.cfg_scale, workers=workers, progress=True,
                             replan_steps=cfg.inference.replan_steps, num_steps=NUM_STEPS, on_episode=count)
            seconds = time.perf_counter() - started
            split = next((line for line in printed.getvalue().splitlines() if line.startswith("collector time:")), "")
            figures.add("collect", "env_steps_per_s", round(steps / seconds, 1), "steps/s", preset=plan.presets[0], w=cfg.inference.cfg_scale,
                        workers=workers, episodes=len(specs), steps=steps, seconds=round(seconds, 2),
                        image_size=cfg.env.image_size, split=split)

        figures.attempt("collect", collect, workers=workers)


# -- 4. full FSDP through the CLI ----------------------------------------------------------------------
def run_cli(args: list[str], figures: Figures, log: Path) -> None:
    """One ``cfgrl`` command, its output appended to ``log``; RuntimeError with its error line if it fails."""
    offset = log_size(log)
    with open(log, "a") as f:
        f.write(f"$ cfgrl {' '.join(args)}\n")
        f.flush()
        done = subprocess.run([sys.executable, "-m", "cfgrl.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                              timeout=max(1.0, figures.left_s()))
    if done.returncode != 0:
        raise RuntimeError(f"cfgrl {args[0]} exited {done.returncode}: {error_line(log, offset)}")


def log_size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def error_line(log: Path, offset: int) -> str:
    """The line of ``log`` after byte ``offset`` (one command's output) that says what went wrong: cfgrl's
    one ``error:`` line, else the last exception's line (torchrun reports after its worker), else the last line."""
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for wanted in (r"error: ", r"[\w.]*(Error|Exception): "):
        found = [line for line in lines if re.match(wanted, line)]
        if found:
            return found[-1][:500]
    return lines[-1][:500] if lines else "(no output)"


def gpu_memory_used_mib() -> int | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=10)
        return int(done.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def train_records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line being written
            records.append(json.loads(line))
    return [r for r in records if r.get("kind") == "train"]


def fsdp_train(figures: Figures, plan: Plan, cameras: tuple[str, ...], work: Path, out: Path) -> None:
    store, checkpoint, run, log = work / "fsdp.zarr", work / "policy", work / "run", out / "fsdp_train.log"
    run_cli(["collect", str(store), "--policy", "scripted:0.3", "--episodes", str(plan.fsdp_episodes), "--workers", "4",
             "-o", "collect.group_size=8"], figures, log)
    policy = bench_helpers().random_policy(plan.presets[0], cameras, plan.device)
    policy.save_pretrained(checkpoint)
    del policy
    release_memory()
    run_cli(["label", str(store), "--policy", str(checkpoint)], figures, log)
    settings = ["train.strategy=fsdp", "train.param_dtype=bf16", f"train.steps={plan.fsdp_steps}",
                f"train.batch_size={TRAIN_BATCH}", "train.gradient_checkpointing=true", "train.log_every=1"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "cfgrl.cli",
               "train", str(store), "--labels", str(store), "--policy", str(checkpoint), "--out", str(run),
               *(item for s in settings for item in ("-o", s))]
    context = {"preset": plan.presets[0], "settings": settings}
    started, memory, offset = time.perf_counter(), [], log_size(log)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        # in this process group, so that gpu_check.sh's timeout reaches it too; SIGTERM makes torchrun end its worker
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None and figures.left_s() > 0:
                if len(train_records(run)) >= plan.fsdp_steps:
                    break  # every step logged: what follows is the final save, not measured here
                used = gpu_memory_used_mib()
                memory += [used] if used is not None else []
                time.sleep(1.0)
        finally:
            stopped = proc.poll() is None
            if stopped:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=15)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    records = train_records(run)
    if not records:
        why = error_line(log, offset)
        figures.add("fsdp", "error", f"stopped at the time limit before a step was logged; last line: {why}" if stopped else why,
                    **context, exit_code=proc.returncode, seconds=round(time.perf_counter() - started, 1))
        return
    rates = [r["samples_per_s"] for r in records]
    steady = rates[1:] or rates  # the first step holds the warm-up (kernels, allocator)
    figures.add("fsdp", "samples_per_s", round(statistics.median(steady), 2), "samples/s", **context,
                per_step=[round(r, 2) for r in rates], step_ms=round(TRAIN_BATCH / statistics.median(steady) * 1e3, 1),
                seconds_to_last_step=round(time.perf_counter() - started, 1))
    if memory:
        figures.add("fsdp", "gpu_memory_used_max", max(memory), "MiB", **context, source="nvidia-smi (the whole GPU, allocator cache included)")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))  # bench/_common.py, imported here, not at the top (see above)
    from _common import Figures as BenchFigures, add_json_option

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where figures.jsonl and fsdp_train.log go")
    parser.add_argument("--budget-s", type=float, default=280.0, help="no step starts after this many seconds")
    parser.add_argument("--dry-run", action="store_true", help="tiny presets on the CPU: checks the script without a GPU")
    add_json_option(parser)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    plan = DRY if args.dry_run else GPU
    figures = Figures(args.out, args.budget_s, None if args.json is None else (BenchFigures(__file__, __doc__), args.json, args))

    import torch

    import cfgrl
    import zarr

    figures.add("setup", "environment", torch.__version__, device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                dry_run=args.dry_run, zarr=f"{zarr.__version__} from {Path(zarr.__file__).parent}", cfgrl=str(Path(cfgrl.__file__).parent),
                time=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    if plan.device == "cuda" and not torch.cuda.is_available():
        figures.add("setup", "error", "no CUDA device: this script is for a lent GPU machine; use --dry-run elsewhere")
        sys.exit(1)
    cameras = builtin_cameras()
    for preset in plan.presets:
        figures.attempt("chunk", lambda preset=preset: chunk_latency(figures, plan, preset, cameras), preset=preset)
    for preset in plan.presets:
        for regime in REGIMES:
            figures.attempt("train", lambda p=preset, r=regime: train_step(figures, plan, p, r, cameras), preset=preset, regime=regime)
    figures.attempt("collect", lambda: collection(figures, plan, cameras))
    with tempfile.TemporaryDirectory(prefix="cfgrl-gpu-check-") as work:
        figures.attempt("fsdp", lambda: fsdp_train(figures, plan, cameras, Path(work), args.out))
    figures.add("done", "seconds", round(time.monotonic() - figures.started, 1), "s")


if __name__ == "__main__":
    main()
