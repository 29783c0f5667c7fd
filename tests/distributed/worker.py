"""Run by torchrun from the tests (2 CPU processes, gloo): the training step under DDP and FSDP.

usage: torchrun --nproc-per-node 2 tests/distributed/worker.py MODEL_DIR OUT_DIR STEPS BATCH MICRO

Writes to OUT_DIR (rank 0): `ddp.safetensors`, `fsdp.safetensors` (the whole model after STEPS steps),
`seen.json` (the example indices each rank trained on, per strategy), and `fsdp-ckpt/step-N/`, a sharded
checkpoint written by torch.distributed.checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lftrain.training import checkpoint, dist_checkpoint, distributed  # noqa: E402
from lftrain.training.checkpoint import TrainState  # noqa: E402
from lftrain.training.loop import _train_step  # noqa: E402
from tests.distributed.common import build, epoch_plan, fit_context  # noqa: E402


def train(model_dir: Path, strategy: str, steps: int, batch: int, micro: int):
    torch.set_num_threads(1)
    ctx = distributed.init(strategy)
    recipe, task, tok, data, model = build(model_dir, batch)
    distributed.wrap(model, ctx, torch.device("cpu"))
    fit = fit_context(recipe, task, data, model, tok, dist=ctx)
    seen = []
    for i, idx in enumerate(epoch_plan(len(data["labels"]), batch)[:steps]):
        ctx.seed_step(0, i)
        micros, weights = ctx.step_plan(idx, micro)
        seen += [int(j) for mb, w in zip(micros, weights) if w for j in mb]
        _train_step(fit, idx, micro)
    return ctx, model, fit, seen


def main() -> None:
    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    steps, batch, micro = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    from safetensors.torch import save_file

    report = {}
    for strategy in ("ddp", "fsdp"):
        ctx, model, fit, seen = train(model_dir, strategy, steps, batch, micro)
        gathered = [None] * ctx.world
        dist.all_gather_object(gathered, seen)
        report[strategy] = gathered
        full = dist_checkpoint.full_state_dict(model) if ctx.fsdp else model.state_dict()
        # evaluation as run.py does it: each rank a slice of the rows, gathered in input order on every rank
        logits = ctx.infer_logits(model, fit.task, fit.train_data, batch_size=16, precision="fp32",
                                  device=torch.device("cpu"), pad_id=fit.pad_id)
        same = [None] * ctx.world
        dist.all_gather_object(same, logits.tobytes())
        assert len(set(same)) == 1, "ranks disagree on the gathered logits"
        if ctx.main:
            save_file({k: v.contiguous() for k, v in full.items()}, str(out / f"{strategy}.safetensors"))
            np.save(out / f"{strategy}-logits.npy", logits)
        if ctx.fsdp:
            checkpoint.save_distributed(ctx, out / "fsdp-ckpt", model, fit.optimizer, fit.scheduler,
                                        TrainState(step=steps, epoch=0, batch_in_epoch=steps), keep=2, protect=set())
    if dist.get_rank() == 0:
        (out / "seen.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
