"""bf16 weights with fp32 masters, and LoRA runs (peft): what trains, what is saved, exact resume, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from cfgrl.errors import CfgrlError
from cfgrl.label import load_label_index
from cfgrl.optimality import from_stored
from cfgrl.policy import PI0Policy
from cfgrl.policy import lora
from cfgrl.train import checkpoint as ckpt_io
from cfgrl.train.optim import MasterWeights
from cfgrl.train.cache import WindowCache
from train_helpers import all_windows_batch, fixed_draw_losses, initial_policy, label, run_train, write_store

LORA = ["train.lora_rank=4", "train.lora_alpha=8", "train.lora_targets=[q_proj,v_proj,expert.*down_proj]"]


def test_masters_take_an_update_too_small_for_a_bf16_weight():
    weight = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    masters = MasterWeights({"w": weight})
    optimiser = torch.optim.SGD(masters.params, lr=1e-3)
    alone = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))  # the same steps without a master
    direct = torch.optim.SGD([alone], lr=1e-3)
    for _ in range(3):  # each step adds 1e-3, under half of bf16's spacing above 1.0 (1/128)
        weight.grad, alone.grad = -torch.ones(4, dtype=torch.bfloat16), -torch.ones(4, dtype=torch.bfloat16)
        masters.take_grads()
        optimiser.step()
        masters.push()
        direct.step()
    master = masters.masters["w"]
    assert master.dtype == torch.float32 and torch.allclose(master, torch.full((4,), 1 + 3e-3))
    assert torch.equal(alone, torch.ones(4, dtype=torch.bfloat16))  # bf16 alone loses every step
    assert torch.equal(weight, torch.ones(4, dtype=torch.bfloat16))  # the weight is the master rounded: 1.0 so far
    for _ in range(2):  # two more: the master reaches 1.005, which rounds to 1 + 1/128
        weight.grad = -torch.ones(4, dtype=torch.bfloat16)
        masters.take_grads()
        optimiser.step()
        masters.push()
    assert torch.equal(weight, torch.full((4,), 1 + 1 / 128, dtype=torch.bfloat16))
    plain = torch.nn.Parameter(torch.ones(4))
    assert MasterWeights({"p": plain}).masters["p"] is plain  # an fp32 weight is its own master


def test_bf16_training_learns_and_saves_bf16_weights_with_fp32_masters(tmp_path):
    store = write_store(tmp_path / "s.zarr", episodes=4, length=10)
    labels = label([store])
    final = run_train(tmp_path / "run", [store], labels, "train.steps=60", "train.lr=5e-3", "train.param_dtype=bf16", "train.save_every=30")
    saved = load_file(str(final / "model.safetensors"))
    assert {v.dtype for v in saved.values() if v.is_floating_point()} == {torch.bfloat16}
    masters = load_file(str(final / "training_state" / "master_weights.safetensors"))
    assert masters and {v.dtype for v in masters.values()} == {torch.float32}
    trained = PI0Policy.from_pretrained(final)  # fp32 by default, from bf16 weights
    (cache,) = (tmp_path / "run" / "cache").iterdir()
    batch = all_windows_batch(WindowCache.open(cache), from_stored(load_label_index(labels).windows.label))
    before = fixed_draw_losses(initial_policy([store]), batch).mean()
    after = fixed_draw_losses(trained, batch).mean()
    assert after < 0.5 * before, (before, after)


@pytest.fixture()
def base(tmp_path):
    """A store, its labels and a saved base policy for LoRA to adapt."""
    store = write_store(tmp_path / "s.zarr", episodes=4, length=10)
    labels = label([store])
    initial_policy([store]).save_pretrained(tmp_path / "base")
    return store, labels, tmp_path / "base"


def test_lora_trains_only_adapters_and_condition_and_saves_merged_weights_beside_adapters(base, tmp_path):
    store, labels, base_dir = base
    final = run_train(tmp_path / "run", [store], labels, f"policy.path={base_dir}", "train.steps=6", *LORA)
    before = load_file(str(base_dir / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert before.keys() == after.keys()  # merged: plain keys, no peft layers
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    adapted = {k for k in after if k.endswith(("q_proj.weight", "v_proj.weight")) or ("expert" in k and k.endswith("down_proj.weight"))}
    conditioned = {k for k in after if k.startswith("condition.")}
    assert changed and changed <= adapted | conditioned and conditioned <= changed
    assert any(k.startswith("transformer.vision.") for k in changed)  # q_proj of every tower
    assert not any("prefix_lm" in k and "down_proj" in k for k in changed)  # expert.*down_proj: the expert's only

    plain = PI0Policy.from_pretrained(final)
    assert not lora.is_attached(plain.model) and plain.condition_trained
    adapter = final / lora.ADAPTER_DIR
    assert {p.name for p in adapter.iterdir()} == {lora.ADAPTER_WEIGHTS, lora.ADAPTER_CONFIG, lora.RECORD}
    record = json.loads((adapter / lora.RECORD).read_text())
    assert record["rank"] == 4 and record["base_policy_id"] == PI0Policy.from_pretrained(base_dir).policy_id
    assert all(".lora_" in k or k.startswith("base_model.model.condition.") for k in load_file(str(adapter / lora.ADAPTER_WEIGHTS)))


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_lora_and_bf16_runs_resume_exactly(base, tmp_path, dtype):
    store, labels, base_dir = base
    settings = [f"policy.path={base_dir}", "train.steps=8", "train.save_every=4", f"train.param_dtype={dtype}", "train.ema_decay=0.9"]
    settings += LORA if dtype == "fp32" else []
    reference = run_train(tmp_path / "ref", [store], labels, *settings)

    run = tmp_path / "run"
    run_train(run, [store], labels, *settings)
    # as a kill right after step 4 was saved leaves it: step 8 and the final pointers never written
    (run / "policy").unlink()
    ckpt_io.point(run / "last", run / "checkpoints" / "step_4")
    import shutil

    shutil.rmtree(run / "checkpoints" / "step_8")
    resumed = run_train(run, [store], labels, resume=True)
    for name in ("model.safetensors", *([f"{lora.ADAPTER_DIR}/{lora.ADAPTER_WEIGHTS}"] if dtype == "fp32" else [])):
        ours, theirs = load_file(str(run / "checkpoints" / "step_8" / name)), load_file(str(reference.resolve().parent / name))
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-6, msg=key)
    assert resumed.resolve().name == "ema_policy"


def test_bad_precision_settings_fail_with_one_line_before_writing(base, tmp_path):
    store, labels, base_dir = base
    with pytest.raises(CfgrlError, match="unknown train.param_dtype 'fp16'; accepted: fp32, bf16"):
        run_train(tmp_path / "a", [store], labels, "train.param_dtype=fp16")
    with pytest.raises(CfgrlError, match="matches no linear layer"):
        run_train(tmp_path / "b", [store], labels, f"policy.path={base_dir}", "train.lora_rank=4", "train.lora_targets=[qkv_proj]")
    with pytest.raises(CfgrlError, match="LoRA adapts a pretrained policy"):
        run_train(tmp_path / "c", [store], labels, "train.lora_rank=4")
    assert not any((tmp_path / name / "checkpoints").exists() for name in "abc")

    run = tmp_path / "lora"
    run_train(run, [store], labels, f"policy.path={base_dir}", "train.steps=2", *LORA)
    listing = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(CfgrlError, match="runs with train.lora_rank=4; --resume continues it so.*not with train.lora_rank=0"):
        run_train(run, [store], labels, "train.lora_rank=0", resume=True)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == listing  # nothing written or removed
