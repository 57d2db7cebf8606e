"""The training run: stores + label version -> checkpoints of a CFGRL-conditioned PI0 policy.

One process:   cfgrl train data/builtin/reach.zarr --labels data/builtin/reach.zarr --out runs/r1
Several GPUs:  torchrun --nproc_per_node 8 -m cfgrl.cli train STORE --labels SPEC --out RUN_DIR
Several nodes: torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 8 -m cfgrl.cli train ...

Each optimiser step: ``grad_accum`` micro-batches of ``batch_size / (world * grad_accum)`` windows
per process, ONE forward each with every sample under its own condition o, then clip, AdamW step,
schedule step, EMA update. Rank 0 logs and saves; DDP averages the gradients.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import secrets
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from cfgrl.config import Config, config_from_dict, with_overrides
from cfgrl.errors import CfgrlError
from cfgrl.label import load_label_index
from cfgrl.optimality import Label
from cfgrl.policy.lora import merged_state
from cfgrl.store import open_stores
from cfgrl.train import checkpoint as ckpt_io
from cfgrl.train.cache import check_frames, ensure_cache
from cfgrl.train.data import ResumableBatchSampler, WindowBatches, make_loader, to_device
from cfgrl.train.logging import Logger, Meter, require_wandb, summarise
from cfgrl.train.objectives import check_positives, epoch_labels, feeds_a_condition, flow_draws, objective_loss, training_rows
from cfgrl.train.optim import EMA, MasterWeights, make_optimizer, make_scheduler
from cfgrl.train.precision import Adapters, check_precision, check_resumed_precision, trainable
from cfgrl.train.rundir import check_out, remove_leftovers, sole_writer
from cfgrl.train.strategy import accumulating, check_strategy, gather, is_sharded, like, may_shard, resolve, scalar, wrap
from cfgrl.train.setup import Processes, build_policy, close_processes, init_processes


def train(cfg: Config, store_paths: list[Path], labels_spec: str, run_dir: Path, resume: bool,
          given: set[str] = frozenset()) -> Path:
    """Run (or resume) training; returns the final policy directory (``RUN_DIR/policy``). ``given``: the
    keys the user set (``config.given_keys``), which a resume refuses to change where the run is shaped by them."""
    procs = init_processes()
    try:
        with contextlib.ExitStack() as held:  # the run directory's lock, until the run ends
            return Run(cfg, store_paths, labels_spec, Path(run_dir), resume, procs, held, given).loop()
    finally:
        close_processes(procs)


def _differences(given: dict, saved: dict) -> list[str]:
    """``section.key=value`` of every setting given now that differs from the saved run's."""
    return [f"{section}.{key}={value}" for section, body in given.items() for key, value in body.items()
            if saved[section][key] != value]


def _new_run_id(procs: Processes) -> str:
    """A random id shared by every rank (rank 0's): it stamps each file of a checkpoint's training state."""
    token = torch.tensor([secrets.randbits(48)], dtype=torch.long, device=procs.device)
    if dist.is_initialized():
        dist.broadcast(token, src=0)
    return f"{int(token):012x}"


def _check_fresh(run_dir: Path) -> None:
    if (run_dir / "last").exists():
        raise CfgrlError(f"'{run_dir}' already holds a run (its 'last' checkpoint); pass --resume to continue it, or choose another --out")


class Run:
    """One training run. Set-up, top-down (``_set_up``): resume reconciliation, inputs, policy, strategy,
    optimiser state, data; then ``loop``. A set-up refused after it created the run directory removes it."""

    def __init__(self, cfg: Config, store_paths: list[Path], labels_spec: str, run_dir: Path, resume: bool, procs: Processes,
                 held: contextlib.ExitStack, given: set[str]):
        self.procs, self.run_dir, self.held = procs, run_dir, held
        self.say = tqdm.write if procs.is_main else (lambda _msg: None)
        check_out(run_dir)
        self.claimed, fresh = False, not run_dir.exists()
        try:
            self._set_up(cfg, store_paths, labels_spec, resume, given)
        except BaseException:
            if self.claimed and fresh:  # refused once it had created the directory (frames that do not decode, ...)
                shutil.rmtree(run_dir, ignore_errors=True)
            raise

    def _set_up(self, cfg: Config, store_paths: list[Path], labels_spec: str, resume: bool, given: set[str]) -> None:
        """The set-up, top-down; nothing is written before every input is valid (``_data`` claims the directory)."""
        if self.run_dir.is_dir():  # an existing run: held before anything in it is read
            self._claim()
        resumed, cfg, source = self._reconcile_resume(cfg, resume, given)
        stores, param_dtype = self._inputs(cfg, store_paths, labels_spec, resumed)
        policy = self._policy(stores, source, resumed, param_dtype)
        named = self._strategy(policy, param_dtype)
        self._optimiser_state(named, resumed)
        self._data(stores, resumed, policy)

    def _reconcile_resume(self, cfg: Config, resume: bool, given: set[str]) -> tuple[Path | None, Config, Path | None]:
        """(the checkpoint resumed or None, the run's configuration, the policy to start from). A resumed run
        continues with its saved configuration; a fresh one needs a directory that holds no run."""
        source = Path(cfg.policy.path) if cfg.policy.path else None
        if not resume:
            _check_fresh(self.run_dir)
            return None, cfg, source
        resumed = ckpt_io.resolve_last(self.run_dir)
        self.trainer_state = ckpt_io.read_trainer_state(resumed)
        saved = config_from_dict(ckpt_io.read_config(resumed))
        ignored = _differences(cfg.to_dict(), saved.to_dict())
        check_resumed_precision([item for item in ignored if item.split('=', 1)[0] in given], saved.train, self.run_dir)
        if ignored:
            self.say(f"warning: --resume continues with the run's saved configuration; ignored: {', '.join(ignored)}")
        self.say(f"resuming {resumed} at step {self.trainer_state['step']} with its saved configuration")
        # a LoRA run restarts from its base, then takes the adapters from the checkpoint
        return resumed, saved, (Path(saved.policy.path) if saved.train.lora_rank else resumed)

    def _inputs(self, cfg: Config, store_paths: list[Path], labels_spec: str, resumed: Path | None) -> tuple[list, torch.dtype]:
        """Check the settings, the stores and the label version against each other; (stores, weights' dtype)."""
        procs, t = self.procs, cfg.train
        self.cfg = cfg
        if t.wandb:
            require_wandb()
        param_dtype = check_precision(cfg)
        check_strategy(t.strategy, procs)
        stores = open_stores(store_paths)
        self.index = load_label_index(labels_spec)
        self.index.check_stores(stores)
        if resumed is not None and self.trainer_state.get("label_version") not in (None, self.index.version):
            raise CfgrlError(f"'{self.run_dir}' was trained on label version {self.trainer_state['label_version']}, --labels gives "
                             f"{self.index.version}; resume with --labels STORE@{self.trainer_state['label_version']}")
        self.windows = self.index.windows
        if len(self.windows) == 0:
            raise CfgrlError(f"label index {self.index.version} has no window; collect longer episodes or check cfgrl.window_stride")
        check_positives(t.objective, self.windows, self.index.version)
        if t.batch_size % (procs.world * t.grad_accum):
            raise CfgrlError(f"train.batch_size={t.batch_size} must be divisible by processes x train.grad_accum = {procs.world * t.grad_accum}")
        self.micro = t.batch_size // (procs.world * t.grad_accum)
        if cfg.cfgrl.use_prefix_dropout and not feeds_a_condition(t.objective, self.windows):
            # A run that conditions no window trains a plain policy, which samples with its prompt;
            # dropping the prompt from every sample would teach it to ignore the prompt.
            self.say("note: no window is conditioned in this run (plain behaviour cloning), so cfgrl.use_prefix_dropout "
                     "does not apply: every sample keeps its prompt")
            self.cfg = with_overrides(cfg, ["cfgrl.use_prefix_dropout=false"])
        return stores, param_dtype

    def _policy(self, stores: list, source: Path | None, resumed: Path | None, param_dtype: torch.dtype) -> torch.nn.Module:
        """Build (or load) the policy, choose the strategy it trains under, attach LoRA, move it to the device."""
        cfg, procs, t = self.cfg, self.procs, self.cfg.train
        torch.manual_seed(t.seed)  # the fresh model's initial weights
        # under FSDP the sharded weights are the fp32 masters: loaded in fp32, gathered in the compute dtype
        policy = build_policy(cfg, stores, source, self.say, torch.float32 if may_shard(t.strategy, procs) else param_dtype)
        policy.require_distinct_prompts(sorted({p for store in stores for p in store.episodes.prompt}))
        self.strategy = resolve(t.strategy, policy, procs)
        if resumed is not None:
            self._check_resumed_strategy()
        if self.strategy == "ddp":
            policy.cast_weights(param_dtype)
        self.horizon = policy.config.chunk_size
        if self.index.manifest["horizon"] != self.horizon:
            raise CfgrlError(f"label index {self.index.version} has windows of {self.index.manifest['horizon']} actions, the policy's "
                             f"chunk is {self.horizon}; label again for this policy (`cfgrl label STORE --policy DIR`, or "
                             "-o policy.chunk_size=N as for train)")
        self.lora = Adapters.attach(policy, t, resumed, self.say)
        trainable(policy, t)
        self.policy = policy.to(procs.device)
        return policy

    def _strategy(self, policy: torch.nn.Module, param_dtype: torch.dtype) -> dict[str, torch.nn.Parameter]:
        """Wrap the policy for DDP or FSDP; its trainable parameters by name (after sharding: FSDP's DTensors)."""
        procs, t = self.procs, self.cfg.train
        self.model = wrap(policy, self.strategy, procs, param_dtype)
        named = {n: p for n, p in policy.named_parameters() if p.requires_grad}
        if self.strategy == "fsdp":
            sharded = sum(is_sharded(p) for p in policy.parameters())
            self.say(f"FSDP over {procs.world} process(es): {sharded} of {len(list(policy.parameters()))} parameter tensors sharded "
                     f"(DTensor), each layer pair one unit, {t.param_dtype} compute, fp32 masters and gradient reduction")
        return named

    def _optimiser_state(self, named: dict[str, torch.nn.Parameter], resumed: Path | None) -> None:
        """Masters, AdamW, schedule and EMA, and the position in the data; restored from the checkpoint when resumed."""
        t = self.cfg.train
        self.masters = MasterWeights(named)
        self.optimizer = make_optimizer(self.masters.params, t)
        self.scheduler = make_scheduler(self.optimizer, t)
        self.ema = EMA(self.masters.masters, t.ema_decay) if t.ema_decay is not None else None
        self.step, self.epoch, self.samples_into_epoch = 0, 0, 0
        self.run_id = (self.trainer_state.get("run_id") if resumed is not None else None) or _new_run_id(self.procs)
        if resumed is None:
            return
        named_files = ckpt_io.restore_training_state(resumed, self.optimizer, self.scheduler, self.trainer_state)
        if self.masters.separate:
            self.masters.load(named_files.get("master_weights", {}))
        if self.ema is not None and "ema" in named_files:
            self.ema.shadow = {k: like(v, named[k]) for k, v in named_files["ema"].items()}
        self.step = self.trainer_state["step"]
        self.epoch = self.trainer_state["epoch"]
        self.samples_into_epoch = self.trainer_state["samples_into_epoch"]

    def _data(self, stores: list, resumed: Path | None, policy: torch.nn.Module) -> None:
        """The batches and the window cache; the last checks, then the run claims its directory and writes."""
        cfg, procs, run_dir, t = self.cfg, self.procs, self.run_dir, self.cfg.train
        self.batches = ResumableBatchSampler(len(self.windows), self.micro, procs.world, procs.rank, t.seed,
                                             training_rows(t.objective, self.windows, t.optimal_repeat))
        if len(self.batches) < 1:
            raise CfgrlError(f"{len(self.batches.subset)} training windows are fewer than one batch of {t.batch_size}; lower train.batch_size")
        cache_root = Path(t.cache_dir) if t.cache_dir else run_dir / "cache"
        check_frames(cache_root, stores, self.windows, self.horizon)

        # Every input is valid: from here on the run writes.
        self._claim()
        if resumed is None:
            _check_fresh(run_dir)  # a run that started in this directory since the check above
        if procs.is_main:
            self.cache = ensure_cache(cache_root, stores, self.windows, self.horizon)
        procs.barrier()
        if not procs.is_main:
            self.cache = ensure_cache(cache_root, stores, self.windows, self.horizon)
        self.loader = make_loader(WindowBatches(self.cache), self.batches, t.num_workers, procs.device.type == "cuda")
        self.conditioned_seen = bool(policy.condition_trained)
        if procs.is_main:
            cfg.save(run_dir / "config.json")
        self.logger = Logger(run_dir, procs.is_main, t.wandb, cfg.to_dict(), self.step)
        repeats = f" (o=1 ones {t.optimal_repeat} times: {len(self.batches.subset)} per epoch)" if t.optimal_repeat > 1 else ""
        self.say(f"{len(np.unique(self.batches.subset))} windows{repeats} from label index {self.index.version}; objective {t.objective}; "
                 f"global batch {t.batch_size} = {procs.world} process(es) x {t.grad_accum} micro-step(s) x {self.micro}")

    def _claim(self) -> None:
        """Rank 0 takes the run directory's lock (creating the directory) and removes what a killed run
        left; the other ranks never write in it."""
        if not self.procs.is_main or self.claimed:
            return
        self.held.enter_context(sole_writer(self.run_dir))
        self.claimed = True
        removed = remove_leftovers(self.run_dir)
        if removed:
            self.say(f"removed what a killed run left: {', '.join(removed)}")

    # -- the loop --------------------------------------------------------------------------------
    def loop(self) -> Path:
        t = self.cfg.train
        meter, epoch_meter = Meter(), Meter()
        batches = self._start_epoch()
        bar = tqdm(total=t.steps, initial=self.step, desc="train", unit="step", disable=not self.procs.is_main, dynamic_ncols=True)
        self.held.callback(bar.close)  # a stop's one line then starts a line of its own
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if self.procs.device.type == "cuda" else contextlib.nullcontext
        self.model.train()
        while self.step < t.steps:
            finite = True
            for micro in range(t.grad_accum):
                started = time.perf_counter()
                raw = next(batches, None)
                if raw is None:  # epoch over: summarise, then redraw labels and reshuffle
                    self._log_epoch(epoch_meter)
                    self.epoch, self.samples_into_epoch = self.epoch + 1, 0
                    batches = self._start_epoch()
                    raw = next(batches)
                self.samples_into_epoch += self.micro * self.procs.world
                ready = time.perf_counter()
                index = np.asarray(raw["index"])
                batch = to_device(raw, self.cache.prompts, self.labels.o[index], self.procs.device)
                noise, flow_time = flow_draws(index, self.step, t.seed, (self.horizon, self.policy.config.max_action_dim), self.procs.device)
                w_pos = torch.as_tensor(self.labels.w_pos[index], device=self.procs.device)
                with accumulating(self.model, self.strategy, self.procs, last=micro == t.grad_accum - 1):
                    with autocast():
                        loss, losses, o = objective_loss(t.objective, self.model, batch, w_pos, t.weighted_alpha, noise, flow_time)
                    (loss / t.grad_accum).backward()
                finite &= bool(torch.isfinite(loss.detach())) and bool(torch.isfinite(losses.detach()).all())
                self.conditioned_seen |= bool((o != Label.NULL).any())
                for m in (meter, epoch_meter):
                    m.add_losses(losses, o)
                    m.add("conditioned", self.labels.conditioned[index].sum())
                    m.add("dropout_hits", self.labels.dropout_hit[index].sum())
                    m.add("wait_s", ready - started)
                    m.add("busy_s", time.perf_counter() - ready)
            self.masters.take_grads()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.masters.params, t.grad_clip if t.grad_clip > 0 else float("inf"))
            self._stop_if_diverged(finite, grad_norm)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.masters.push()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            bar.update(1)
            if self.step % t.log_every == 0 or self.step == t.steps:
                metrics = {**summarise(meter.reduce(), self.procs.world), "lr": lr, "grad_norm": scalar(grad_norm), "epoch": self.epoch}
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", wait=f"{metrics['data_wait_share']:.0%}")
                self.logger.log("train", self.step, metrics)
            if self.step % t.save_every == 0 or self.step == t.steps:
                self._save()
        bar.close()
        self.logger.close()
        return self._finish()

    def _agreed(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank (collective): a stop every rank takes, so none waits for the others."""
        value = torch.tensor([float(flag)], device=self.procs.device)
        if self.procs.world > 1:
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def _stop_if_diverged(self, losses_finite: bool, grad_norm: torch.Tensor) -> None:
        """Stop at the first non-finite loss or gradient, before the optimiser writes it into the weights, so
        the last checkpoint stays the last good one (an AdamW step on a NaN gradient makes every weight NaN)."""
        norm = grad_norm.full_tensor() if is_sharded(grad_norm) else grad_norm
        if self._agreed(not losses_finite or not bool(torch.isfinite(norm))):
            raise CfgrlError(f"training stopped at step {self.step + 1}: {'the loss' if not losses_finite else 'the gradient'} is "
                             f"not finite (NaN or inf), so this step was not applied; {self._last_good()}: lower train.lr, "
                             "raise train.warmup_steps or set train.grad_clip, then start again or --resume")

    def _last_good(self) -> str:
        last = self.run_dir / "last"
        return f"the last good checkpoint, {last.resolve()}, is kept" if last.exists() else "no checkpoint was saved yet"

    def _check_weights(self) -> None:
        """Refuse to save non-finite weights (collective): the previous checkpoint stays the last good one."""
        local = [p.to_local() if is_sharded(p) else p for p in self.masters.params]
        if self._agreed(not all(bool(torch.isfinite(p.detach()).all()) for p in local)):
            raise CfgrlError(f"training stopped at step {self.step}: the weights are no longer finite (NaN or inf), so they "
                             f"were not saved; {self._last_good()}: lower train.lr or raise train.warmup_steps, then start again")

    def _start_epoch(self):
        t = self.cfg.train
        self.labels = epoch_labels(t.objective, self.windows, self.index.manifest, t.redraw_dropout, self.cfg.cfgrl.seed, self.epoch)
        skip = self.samples_into_epoch // (self.micro * self.procs.world)
        self.batches.set_position(self.epoch, skip)
        return iter(self.loader)

    def _log_epoch(self, meter: Meter) -> None:
        sums = meter.reduce()
        if sums["samples"] == 0:  # resumed exactly at an epoch's end: nothing of it was seen here
            return
        metrics = {**summarise(sums, self.procs.world), "epoch": self.epoch}
        self.logger.log("epoch", self.step, metrics)
        shares = ", ".join(f"o={k} {metrics[f'share_{k}']:.0%} loss {metrics[f'loss_{k}']:.4f}" for k in (label.key for label in Label))
        self.say(f"epoch {self.epoch} done at step {self.step}: loss {metrics['loss']:.4f} ({shares}); "
                 f"data wait {metrics['data_wait_share']:.1%}")

    # -- saving ----------------------------------------------------------------------------------
    def _check_resumed_strategy(self) -> None:
        saved = self.trainer_state.get("strategy", "ddp")
        if saved != self.strategy:
            raise CfgrlError(f"'{self.run_dir}' was trained with {saved} ({self.trainer_state.get('world_size', 1)} process(es)); it resumes "
                             f"as {saved} only, not {self.strategy}: there is no conversion between DDP and FSDP training states "
                             f"(start a new run from its policy: --policy {self.run_dir}/last)")

    def _full_state(self, ema: bool = False) -> dict[str, torch.Tensor]:
        """The model's state dict, full, on rank 0 ({} elsewhere; collective): gathered from the shards under
        FSDP, the EMA's weights in place of the trained ones with ``ema``. LoRA adapters are still apart."""
        state = self.policy.model.state_dict()
        if ema:
            for name, value in self.ema.shadow.items():
                key = name.removeprefix("model.")
                state[key] = value.to(state[key].dtype)
        return gather(state, self.procs)

    def _save(self) -> None:
        self._check_weights()
        seen = torch.tensor([float(self.conditioned_seen)])
        if self.procs.world > 1:
            seen = seen.to(self.procs.device)
            dist.all_reduce(seen, op=dist.ReduceOp.MAX)
        # The condition parameters count as trained once any process fed a conditioned label.
        self.policy.condition_trained = bool(seen.item())
        trainer = {"epoch": self.epoch, "samples_into_epoch": self.samples_into_epoch, "world_size": self.procs.world,
                   "label_version": self.index.version, "label_index": str(self.index.path.absolute()),  # evaluate's split check reads it
                   "objective": self.cfg.train.objective, "strategy": self.strategy,
                   "run_id": self.run_id}
        state = self._full_state()
        named = {"ema": gather(self.ema.shadow, self.procs)} if self.ema is not None else {}
        if self.masters.separate:
            named["master_weights"] = self.masters.separate
        tmp = ckpt_io.begin_checkpoint(self.run_dir, self.step) if self.procs.is_main else None
        if self.strategy == "fsdp":  # every rank writes its optimiser shard into the staging directory
            self.procs.barrier()
            ckpt_io.save_optimizer_shard(ckpt_io.staging(self.run_dir, self.step), self.optimizer, self.procs.rank, self.procs.world,
                                         ckpt_io.stamp_of(trainer, self.step))
            self.procs.barrier()
        if self.procs.is_main:
            beside = (lambda checkpoint: self.lora.save(checkpoint, state)) if self.lora is not None else None
            path = ckpt_io.save_checkpoint(tmp, self.run_dir, self.step, self.policy, merged_state(self.policy.model, state), self.optimizer,
                                           self.scheduler, trainer, self.cfg.to_dict(), named, beside)
            self.say(f"saved {path}")
            t = self.cfg.train
            deleted = ckpt_io.prune(self.run_dir, t.keep_last, t.keep_every)
            if deleted:
                self.say(f"deleted {', '.join(deleted)} (train.keep_last={t.keep_last}, train.keep_every={t.keep_every})")
        self.procs.barrier()

    def _finish(self) -> Path:
        """Point ``RUN_DIR/policy`` at the final weights (the EMA weights when train.ema_decay is set)."""
        final = self.run_dir / "checkpoints" / f"step_{self.step}"
        target = final / "ema_policy" if self.ema is not None else final
        if self.ema is not None and not target.exists():
            state = self._full_state(ema=True)
            if self.procs.is_main:
                tmp = final / f".ema_policy-{os.getpid()}"  # hidden: a kill's leftover (rundir.remove_leftovers)
                shutil.rmtree(tmp, ignore_errors=True)
                self.policy.save_pretrained(tmp, merged_state(self.policy.model, state))
                os.replace(tmp, target)
        if self.procs.is_main:
            ckpt_io.point(self.run_dir / "policy", target)
            (self.run_dir / "summary.json").write_text(json.dumps({"step": self.step, "policy": str(target)}, indent=1))
        self.procs.barrier()
        return self.run_dir / "policy"
