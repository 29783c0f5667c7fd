"""Does lftrain's bf16 path train SmolLM2's LoRA less precisely than TRL's? (docs/sft.md)

One batch, one set of LoRA weights: the gradient and loss of each bf16 variant against an fp32 reference.
Variants: transformers' eager and `sdpa` attention under autocast (TRL's path), lftrain's `lft_eager` attention,
and each with the frozen base weights stored in bf16 (`lftrain.accel`). The batch is the first 16 examples of
bench_sft.py's training file (run `python benchmarks/bench_sft.py` once to write it, or pass `--train FILE`).

    python benchmarks/bench_sft_precision.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import bench_sft
import numpy as np


def main() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lftrain.accel.adapter_bf16 import bf16_frozen_base
    from lftrain.accel.dropout import register_attention

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=Path, default=Path("/tmp/lft-bench-sft/train.jsonl"))
    args = p.parse_args()
    torch.set_num_threads(2)
    model_path = bench_sft.model_dir()
    enc, task, tok = bench_sft.lftrain_encoding(model_path, args.train)
    batch = task.collate(enc, np.arange(16), tok.pad_token_id or 0)

    def build(attention: str):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation=attention)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                 target_modules=bench_sft.TARGETS, task_type="CAUSAL_LM"))
        torch.manual_seed(1)
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at zero, which would leave A without a gradient: as after a few steps
                param.data.normal_(0, 0.01)
        return model

    def loss_and_grad(model, bf16: bool):
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(**task.model_inputs(batch))
        loss = task.loss_sum(out, batch) / task.loss_units(batch)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten().float() for p in model.parameters() if p.requires_grad])

    ref_loss, ref = loss_and_grad(build("eager"), bf16=False)
    print(f"fp32 reference: loss {ref_loss:.5f}")
    lft = register_attention()
    for name, attention, base_bf16 in (("eager (TRL's path)", "eager", False), ("sdpa", "sdpa", False),
                                       ("lft_eager", lft, False), ("eager + bf16 base", "eager", True),
                                       ("lft_eager + bf16 base (lftrain)", lft, True)):
        model = build(attention)
        if base_bf16:
            bf16_frozen_base(model)
        loss, grad = loss_and_grad(model, bf16=True)
        rel = float((grad - ref).norm() / ref.norm())
        print(f"{name:34s} loss {loss:.5f} ({100 * (loss / ref_loss - 1):+.2f}%)  gradient relative error {rel:.4f}")


if __name__ == "__main__":
    main()
