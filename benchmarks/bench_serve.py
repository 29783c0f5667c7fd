"""Load test of `lft serve` on loopback: requests/s and latency percentiles at several client concurrencies.

Starts `lft serve RUN` in a child process (a run given with --run, or a short MiniLM run trained from
recipes/rotten-tomatoes-minilm.yaml), then, for each concurrency level, sends a fixed number of POST /predict
requests from that many concurrent clients (asyncio + httpx, in this process) and reports requests/s, p50/p95/p99
latency, errors, the server's micro-batches (mean inputs per forward pass, from GET /health) and the server's RSS
before and after. Bounded and self-stopping: a fixed number of requests per level, a time limit per level, and the
server is stopped at the end whatever happens.

    python benchmarks/bench_serve.py --run runs/tour --json benchmarks/results/bench_serve.json
    python benchmarks/bench_serve.py --run runs/tour --requests 50 --concurrency 1,8   # a quick check

Runs whose inputs are plain text (text classification, multi-label, regression, token classification,
causal-lm-sft) can be measured; the texts are synthetic review sentences of varied length (seeded).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, child_env, default_threads, in_workdir, write_results  # noqa: E402

WORDS = ("the film was a story with an ending and a cast that felt very quite good great fine superb lovely "
         "charming brilliant moving bad awful poor dull boring tedious clumsy weak plot acting score").split()


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(5, 60))) for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a process (Linux /proc), in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = round(int(value.split()[0]) / 1024, 1)
    return out


def train_run(workdir: Path, threads: int, steps: int) -> Path:
    """A short MiniLM run from the demo recipe (few steps: the model's accuracy does not matter here)."""
    out = workdir / "run"
    if (out / "model").is_dir():
        return out
    cmd = [sys.executable, "-m", "lftrain", "train", str(REPO_ROOT / "recipes" / "rotten-tomatoes-minilm.yaml"),
           f"train.max_steps={steps}", f"train.threads={threads}", "eval.bootstrap_samples=0", "eval.latency=false",
           "eval.report=false", "eval.ood=null", f"output.dir={out}"]
    print(f"training a {steps}-step run: {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=child_env(threads), stdout=sys.stderr)
    return out


def start_server(run: Path, port: int, args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lftrain", "serve", str(run), "--port", str(port), "--log-level", "warning",
           "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
           "--max-queue", str(args.max_queue)]
    return subprocess.Popen(cmd, env=child_env(args.threads), stdout=sys.stderr, stderr=sys.stderr)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server exited with {proc.returncode} before answering")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.25)
    raise SystemExit(f"error: the server did not answer /health within {timeout:.0f} s")


async def load(url: str, concurrency: int, requests: int, batch: list[list[str]], timeout: float) -> dict:
    """`requests` POST /predict from `concurrency` clients; latencies of the successful ones, errors counted."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            start = time.perf_counter()
            try:
                r = await http.post(f"{url}/predict", json={"inputs": batch[i % len(batch)]})
                ok = r.status_code == 200
                key = None if ok else f"http {r.status_code}"
            except httpx.HTTPError as exc:
                ok, key = False, type(exc).__name__
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors[key] = errors.get(key, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client(http) for _ in range(concurrency))), timeout)
        elapsed = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "seconds": elapsed}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run_level(url: str, concurrency: int, args, batch: list[list[str]]) -> dict:
    import httpx

    before = httpx.get(f"{url}/health", timeout=5).json()
    try:
        raw = asyncio.run(load(url, concurrency, args.requests, batch, args.level_timeout))
    except TimeoutError:
        raw = {"latencies": [], "errors": {"level timed out": args.requests}, "seconds": args.level_timeout}
    after = httpx.get(f"{url}/health", timeout=5).json()
    lat, batches = raw["latencies"], after.get("batches", 0) - before.get("batches", 0)
    ms = {f"p{q}_ms": round(1000 * v, 2) if (v := percentile(lat, q)) is not None else None for q in (50, 95, 99)}
    return {"concurrency": concurrency, "requests": args.requests, "ok": len(lat),
            "errors": sum(raw["errors"].values()), "error_kinds": raw["errors"],
            "requests_per_s": round(len(lat) / raw["seconds"], 2), **ms,
            "mean_inputs_per_batch": round((after.get("inputs", 0) - before.get("inputs", 0)) / batches, 2)
            if batches else None}


def table(levels: list[dict]) -> str:
    head = f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} " \
           f"{'inputs/batch':>12}"
    rows = [head] + [f"{r['concurrency']:>7} {r['requests']:>8} {r['errors']:>6} {r['requests_per_s']:>8.2f} "
                     f"{_num(r['p50_ms'])} {_num(r['p95_ms'])} {_num(r['p99_ms'])} "
                     f"{_num(r['mean_inputs_per_batch'], 12)}" for r in levels]
    return "\n".join(rows)


def _num(v, width: int = 8) -> str:
    return f"{v:>{width}.2f}" if v is not None else f"{'-':>{width}}"


def measure(run: Path, args) -> dict:
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(run, port, args)
    try:
        wait_ready(url, proc, args.start_timeout)
        batch = [t[i:i + args.texts_per_request] for t in [texts(512, args.seed)]
                 for i in range(0, 512, args.texts_per_request)]
        asyncio.run(load(url, 1, args.warmup, batch, args.level_timeout))  # first calls build kernels, caches
        memory = {"before": rss_mb(proc.pid)}
        levels = [run_level(url, c, args, batch) for c in args.concurrency]
        memory["after"] = rss_mb(proc.pid)
        return {"levels": levels, "server_memory": memory}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="run directory to serve (default: train a short MiniLM run)")
    p.add_argument("--workdir", type=Path, help="where the trained run goes (default: a temp dir, removed after)")
    p.add_argument("--train-steps", type=int, default=30, help="steps of the run trained without --run (default 30)")
    p.add_argument("--concurrency", default="1,8,32", help="client concurrency levels (default 1,8,32)")
    p.add_argument("--requests", type=int, default=400, help="requests per level (default 400)")
    p.add_argument("--warmup", type=int, default=20, help="requests sent before measuring (default 20)")
    p.add_argument("--texts-per-request", type=int, default=1, help="inputs per request (default 1)")
    p.add_argument("--max-batch", type=int, default=32, help="the server's --max-batch (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's --max-wait-ms (default 5)")
    p.add_argument("--max-queue", type=int, default=256, help="the server's --max-queue (default 256)")
    p.add_argument("--threads", type=int, default=default_threads(), help="the server's torch threads")
    p.add_argument("--port", type=int, help="port (default: a free one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic texts")
    p.add_argument("--start-timeout", type=float, default=180, help="seconds the server may take to load")
    p.add_argument("--level-timeout", type=float, default=600, help="seconds one level may take at most")
    p.add_argument("--json", type=Path, help="also write the configuration and results as JSON")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]

    def go(workdir: Path) -> int:
        run = args.run or train_run(workdir, args.threads, args.train_steps)
        result = measure(run, args)
        print(table(result["levels"]))
        mem = result["server_memory"]
        print(f"server RSS: {mem['before']['rss_mb']} MB before, {mem['after']['rss_mb']} MB after "
              f"(peak {mem['after']['peak_rss_mb']} MB)")
        if args.json:
            config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_results(args.json, {"config": {**config, "run": str(run)}, **result})
        return 0 if all(r["errors"] == 0 for r in result["levels"]) else 1

    return in_workdir(args.workdir, "bench-serve-", go) if not args.run else go(Path("."))


if __name__ == "__main__":
    raise SystemExit(main())
