#!/usr/bin/env bash
# The GPU path, checked the day a GPU is at hand: the demo recipe (full fine-tuning), a LoRA recipe and the SFT recipe
# trained on CUDA for one epoch each; prints the device, the precision `auto` chose, samples/s and the headline metric.
#
#   bash benchmarks/gpu_check.sh            # on cuda (the first GPU)
#   bash benchmarks/gpu_check.sh cuda:1     # on another one
#
# Run it in the project venv with a CUDA build of torch (`make setup TORCH_SPEC=` after installing your own torch).
set -euo pipefail
cd "$(dirname "$0")/.."
device=${1:-cuda}
py=${PY:-.venv/bin/python}
"$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'torch sees no GPU (torch ' + torch.__version__ + ')')"
out=$(mktemp -d)
for recipe in rotten-tomatoes-minilm rotten-tomatoes-minilm-lora smollm2-rotten-tomatoes-lora; do
  "$py" -m lftrain train "recipes/$recipe.yaml" "train.device=$device" train.epochs=1 "output.dir=$out/$recipe" \
    eval.latency=false > "$out/$recipe.log" 2>&1 || { echo "$recipe: failed (log: $out/$recipe.log)"; exit 1; }
  "$py" - "$out/$recipe" "$recipe" <<'PY'
import json, sys
from pathlib import Path
run, name = Path(sys.argv[1]), sys.argv[2]
manifest = json.loads((run / "manifest.json").read_text())
lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
end = [r for r in lines if r["event"] == "train_end"][-1]
final = [r for r in lines if r["event"] == "eval" and r.get("final")][-1]
metric = "accuracy" if "accuracy" in final else "loss"
print(f"{name}: device {manifest['device']}, precision {manifest['precision']} ({manifest['precision_reason']}), "
      f"{end['train_samples_per_second']:.1f} samples/s, {final['split']} {metric} {final[metric]:.4f}")
PY
done
echo "runs and logs: $out"
