"""Benchmark: one model's train steps/s on a GPU, by what runs the step (issue #17).

    PYTHONPATH=. python benchmarks/bench_gpu_step.py --out $OUT     # on the device machine

For conv and MLP at batch 64 and 256 it times bvae's ``Trainer`` step (its CUDA defaults and
each switch: compile, bf16, CUDA graphs, fused Adam) with the dataset on the GPU, and profiles
the conv step at batch 64 (where the time goes: GPU busy share, top kernels). Each figure is
the median of ``--repeats`` windows of ``--steps`` steps after ``--warmup`` steps (compilation
and graph capture happen there). Rows go to stdout and ``--out``/gpu_step.json as they come.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from bvae.config import ModelConfig, ObjectiveConfig, TrainConfig
from bvae.data import render
from bvae.training import Member, Trainer

# name: the train settings that differ from bvae's CUDA defaults (auto = compile and bf16 on)
VARIANTS = {
    "eager_fp32": {"compile": "off", "bf16": "off", "cuda_graphs": "off", "fused_adam": "off"},
    "eager_fp32_fused": {"compile": "off", "bf16": "off", "cuda_graphs": "off", "fused_adam": "on"},
    "eager_bf16": {"compile": "off", "bf16": "on", "cuda_graphs": "off", "fused_adam": "off"},
    "compile_bf16": {"compile": "on", "bf16": "on", "cuda_graphs": "off", "fused_adam": "off"},
    "compile_fp32": {"compile": "on", "bf16": "off", "cuda_graphs": "off", "fused_adam": "off"},
    "graph_fp32": {"compile": "off", "bf16": "off", "cuda_graphs": "on", "fused_adam": "on"},
    "graph_bf16": {"compile": "off", "bf16": "on", "cuda_graphs": "on", "fused_adam": "on"},
    "compile_graph_fp32": {"compile": "on", "bf16": "off", "cuda_graphs": "on", "fused_adam": "on"},
    "compile_graph_bf16": {"compile": "on", "bf16": "on", "cuda_graphs": "on", "fused_adam": "on"},
    "default": {},  # bvae's auto settings on CUDA, whatever they now are
}


def trainer_for(arch: str, batch: int, settings: dict, data: torch.Tensor, total: int) -> Trainer:
    train = TrainConfig(steps=total, batch_size=batch, learning_rate=1e-4, device="cuda", **settings)
    return Trainer(
        ModelConfig(architecture=arch), [Member(ObjectiveConfig(kind="beta", beta=4.0), train)], data
    )


def rate(trainer: Trainer, args) -> tuple[float, list[float]]:
    for _ in range(args.warmup):
        trainer.run_step()
    rates = []
    for _ in range(args.repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.run_step()
        torch.cuda.synchronize()
        rates.append(args.steps / (time.perf_counter() - start))
    return statistics.median(rates), rates


def profile(trainer: Trainer, steps: int) -> dict:
    """GPU busy share of the wall time over ``steps`` steps, and the kernels that take it."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(20):
        trainer.run_step()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            trainer.run_step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    kernels = [e for e in events if getattr(e, "self_device_time_total", 0) > 0]
    gpu_us = sum(e.self_device_time_total for e in kernels)
    launches = sum(e.count for e in kernels)
    top = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:12]
    return {
        "steps": steps,
        "wall_ms_per_step": 1e3 * wall / steps,
        "gpu_ms_per_step": gpu_us / 1e3 / steps,
        "gpu_busy_share": gpu_us / 1e6 / wall,
        "kernels_per_step": launches / steps,
        "top_kernels": [
            {"name": e.key[:90], "us_per_step": e.self_device_time_total / steps, "calls": e.count}
            for e in top
        ],
        "table": events.table(sort_by="self_device_time_total", row_limit=25),
    }


def parity(arch: str, data: torch.Tensor, steps: int) -> dict:
    """A graphed run against an eager one from the same seed: the largest weight difference
    after ``steps`` steps (0.0: the replayed kernels are the eager ones, to the bit)."""
    weights = []
    for graphs in ("off", "on"):
        settings = {"compile": "off", "bf16": "off", "cuda_graphs": graphs, "fused_adam": "on"}
        trainer = trainer_for(arch, 64, settings, data, steps)
        losses = [float(trainer.run_step()[0, 0]) for _ in range(steps)]
        weights.append((torch.cat([p.detach().flatten() for p in trainer.models[0].parameters()]), losses))
    (eager, eager_losses), (graphed, graphed_losses) = weights
    return {
        "arch": arch,
        "steps": steps,
        "max_abs_weight_difference": float((eager - graphed).abs().max()),
        "losses_equal": eager_losses == graphed_losses,
        "last_losses": [eager_losses[-1], graphed_losses[-1]],
    }


def jobs(args) -> list[tuple[str, int, str]]:
    """Every (arch, batch, variant), the cheap ones first: a budget cuts the compiled tail."""
    grid = [(a, b, v) for a in args.archs for b in args.batch_sizes for v in args.variants]
    compiled = [job for job in grid if VARIANTS[job[2]].get("compile", "auto") != "off"]
    compiled.sort(key=lambda job: (job[1], args.variants.index(job[2]), job[0]))  # batch 64 first
    return [job for job in grid if job not in compiled] + compiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["conv", "mlp"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=737280)
    parser.add_argument("--profile", nargs="*", default=["eager_fp32", "graph_fp32", "default"])
    parser.add_argument("--parity-steps", type=int, default=100)
    parser.add_argument("--budget-s", type=float, default=1e9, help="skip what starts after this")
    parser.add_argument("--out", type=Path, default=Path("bench-gpu"))
    args = parser.parse_args()
    started = time.perf_counter()
    torch._dynamo.config.cache_size_limit = 64
    args.out.mkdir(parents=True, exist_ok=True)
    data = torch.from_numpy(render.render_spread(args.images, workers=os.cpu_count() or 1)).cuda()
    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "command": "python benchmarks/bench_gpu_step.py " + " ".join(sys.argv[1:]),
        "steps_per_window": args.steps,
        "repeats": args.repeats,
        "data_seconds": round(time.perf_counter() - started, 1),
        "parity": [],
        "results": [],
        "profiles": {},
        "skipped": [],
    }

    def save() -> None:
        (args.out / "gpu_step.json").write_text(json.dumps(report, indent=2) + "\n")

    for arch in args.archs if args.parity_steps else []:
        try:
            report["parity"].append(parity(arch, data, args.parity_steps))
        except Exception as error:  # noqa: BLE001 - record and go on: device time is short
            report["parity"].append({"arch": arch, "error": repr(error)[:2000]})
        print(json.dumps(report["parity"][-1]), flush=True)
        save()
    total = args.warmup + args.repeats * args.steps + 1000
    for arch, batch, name in jobs(args):
        if time.perf_counter() - started > args.budget_s:
            report["skipped"].append(f"{arch} b{batch} {name}")
            continue
        torch._dynamo.reset()
        setup = time.perf_counter()
        try:
            trainer = trainer_for(arch, batch, VARIANTS[name], data, total)
            median, rates = rate(trainer, args)
            row = {
                "arch": arch,
                "batch_size": batch,
                "variant": name,
                "steps_per_s": round(median, 1),
                "images_per_s": round(median * batch),
                "windows": [round(r, 1) for r in rates],
                "seconds_with_warmup": round(time.perf_counter() - setup, 1),
            }
            if arch == "conv" and batch == 64 and name in args.profile:
                try:
                    report["profiles"][name] = profile(trainer, 50)
                except Exception as error:  # noqa: BLE001 - the timing row stands without it
                    report["profiles"][name] = {"error": repr(error)[:2000]}
            del trainer
        except Exception as error:  # noqa: BLE001 - record and go on: device time is short
            row = {"arch": arch, "batch_size": batch, "variant": name, "error": repr(error)[:2000]}
        report["results"].append(row)
        print(json.dumps(row), flush=True)
        save()
    report["seconds"] = round(time.perf_counter() - started, 1)
    save()
    for name, result in report["profiles"].items():
        print(f"--- profile {name}", {k: v for k, v in result.items() if k != "table"})


if __name__ == "__main__":
    main()
