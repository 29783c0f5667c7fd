"""`lft train RECIPE --nproc N`: start the run on N processes through torchrun (torch.distributed.run).

Nothing is launched by hand: torchrun sets RANK/WORLD_SIZE/MASTER_ADDR for each worker, restarts nothing
(`--max-restarts 0`: a failed run is resumed by running the command again), and on several nodes meets the
other nodes at a c10d rendezvous endpoint. Each worker runs `python -m lftrain train RECIPE ...` and joins the
process group in `lftrain.training.distributed.init`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lftrain.errors import InputError

RESULT_ENV = "LFTRAIN_RESULT_FILE"  # where rank 0 writes the TrainResult for a launching Python caller


def torchrun_command(recipe: str, overrides: list[str], *, nproc: int, nnodes: int = 1, node_rank: int = 0,
                     rdzv_endpoint: str | None = None, new_run: bool = False, allow_recipe_change: bool = False,
                     verbose: bool = False) -> list[str]:
    if nproc < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise InputError(f"--nproc {nproc} --nnodes {nnodes} --node-rank {node_rank}: need nproc >= 1, nnodes >= 1 "
                         "and 0 <= node-rank < nnodes")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}",
           "--max-restarts=0"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")  # a local rendezvous on a free port
    elif rdzv_endpoint is None:
        raise InputError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT, the same on every node (a host every "
                         "node can reach, e.g. the first node of the allocation)")
    else:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--node-rank={node_rank}",
                f"--rdzv-id={os.environ.get('SLURM_JOB_ID', 'lftrain')}"]
    cmd += ["-m", "lftrain", *(["-v"] if verbose else []), "train", str(recipe), *overrides]
    cmd += ["--new-run"] if new_run else []
    cmd += ["--allow-recipe-change"] if allow_recipe_change else []
    return cmd


def run_torchrun(cmd: list[str], env: dict | None = None) -> int:
    """Run torchrun in the foreground. A signal to this process reaches torchrun (same process group), which
    stops its workers; a SIGKILL to the group kills torchrun, and the workers die with it (distributed.init)."""
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})})
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return proc.wait()


def train(recipe, overrides: list[str] | None = None, *, new_run: bool = False, allow_recipe_change: bool = False,
          on_eval=None, nproc: int | None = None, nnodes: int = 1, node_rank: int = 0,
          rdzv_endpoint: str | None = None):
    """What `lftrain.train` does (see its docstring): one process, or N through torchrun; the eval.fail_if gate."""
    if nproc:
        return train_distributed(recipe, overrides, nproc=nproc, nnodes=nnodes, node_rank=node_rank,
                                 rdzv_endpoint=rdzv_endpoint, new_run=new_run, allow_recipe_change=allow_recipe_change)
    from lftrain.config import resolve_recipe
    from lftrain.evaluation.gate import enforce_gate
    from lftrain.orchestrator.stages import train_recipe  # stages, self-training rounds, or one plain run

    result = train_recipe(resolve_recipe(recipe, overrides), new_run=new_run, allow_recipe_change=allow_recipe_change,
                          on_eval=on_eval)
    report_result(result)  # a worker of `train(..., nproc=N)`: rank 0 hands the result to the launcher
    enforce_gate(result)  # eval.fail_if: raises GateFailed (CLI exit 4) carrying the result; the model is saved
    return result


def train_distributed(recipe, overrides: list[str] | None, *, nproc: int, nnodes: int = 1, node_rank: int = 0,
                      rdzv_endpoint: str | None = None, new_run: bool = False, allow_recipe_change: bool = False):
    """`train(..., nproc=N)`: launch torchrun, wait, and return rank 0's TrainResult."""
    from lftrain.config import dump_recipe
    from lftrain.config.schema import Recipe
    from lftrain.errors import LftError
    from lftrain.orchestrator.run import TrainResult

    with tempfile.TemporaryDirectory(prefix="lft-launch-") as tmp:
        if isinstance(recipe, (dict, Recipe)):  # the workers read a file: write the resolved recipe
            from lftrain.config import load_recipe

            resolved = load_recipe(data=recipe if isinstance(recipe, dict) else recipe.model_dump(mode="json"),
                                   overrides=overrides)
            recipe_file = Path(tmp) / "recipe.yaml"
            recipe_file.write_text(dump_recipe(resolved))
            recipe, overrides = str(recipe_file), []
        result_file = Path(tmp) / "result.json"
        cmd = torchrun_command(str(recipe), list(overrides or []), nproc=nproc, nnodes=nnodes, node_rank=node_rank,
                               rdzv_endpoint=rdzv_endpoint, new_run=new_run, allow_recipe_change=allow_recipe_change)
        code = run_torchrun(cmd, {RESULT_ENV: str(result_file)})
        if code != 0 or not result_file.is_file():
            raise LftError(f"distributed training failed (torchrun exit code {code}); the workers' messages are above")
        data = json.loads(result_file.read_text())
    return TrainResult(**{**data, "run_dir": Path(data["run_dir"]), "model_dir": Path(data["model_dir"])})


def report_result(result) -> None:
    """In a worker launched by `train` above: rank 0 hands its result back to the launching process."""
    target = os.environ.get(RESULT_ENV)
    if target and int(os.environ.get("RANK", "0")) == 0:
        from dataclasses import asdict

        Path(target).write_text(json.dumps(asdict(result), default=str))
