"""Benchmark: K members trained as one ensemble against K single runs one after another.

    python benchmarks/bench_ensemble.py                                  # this CPU: K 1, 4, 8
    python benchmarks/bench_ensemble.py --device cuda --ks 1 8 32 64 --archs conv mlp \\
        --mechanisms vmap loop --compile off on --steps 300 --out $OUT  # a GPU (see BENCHMARKS.md)

Renders its own data (procedural dSprites; no files, no network) and needs only torch, numpy
and bvae's core modules (pydantic for its configs: BENCHMARKS.md shows how to carry it to a
GPU machine that lacks it). No MLflow, Prefect or DVC. For every architecture and K it times:

- ``sequential``: K single runs (``bvae.training.Trainer``), one after another (K = 1 only
  once per setting: it is the same for every K);
- ``ensemble``: one ``Trainer`` of K members per mechanism (loop | vmap | bmm) and compile
  setting.

``--profile`` then profiles the fastest setting at its K (``torch.profiler``, eager: CUDA
graphs and compile off, so that every kernel shows by name) and writes the top kernels by
self time to ``profile.txt`` in ``--out``.

Each timing is the median of ``--repeats`` windows of ``--steps`` steps after ``--warmup``
steps (compilation happens there). Reports member-steps/s (K × steps/s), the speed-up over
sequential, and on CUDA the peak GPU memory per member. Writes JSON to stdout and ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from bvae.config import ModelConfig, ObjectiveConfig, TrainConfig
from bvae.data import render
from bvae.training import Member, Trainer

BETAS = (1.0, 2.0, 4.0, 6.0, 8.0, 16.0)


def members(k: int, args, total_steps: int, compile_setting: str, graphs: str = "off") -> list[Member]:
    """K members of the paper grid: β cycling through Locatello et al.'s values, a seed each."""
    return [
        Member(
            ObjectiveConfig(kind="beta", beta=BETAS[i % len(BETAS)]),
            TrainConfig(
                steps=total_steps,
                batch_size=args.batch_size,
                learning_rate=1e-4,
                seed=i,
                device=args.device,
                log_every=args.steps,
                checkpoint_every=total_steps,
                compile=compile_setting,
                cuda_graphs=graphs,
            ),
        )
        for i in range(k)
    ]


def timed_windows(step, args) -> float:
    """Median steps/s over the windows, after the warm-up steps."""
    for _ in range(args.warmup):
        step()
    rates = []
    for _ in range(args.repeats):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        rates.append(args.steps / (time.perf_counter() - start))
    return statistics.median(rates)


def reset_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mib(device: str, baseline: int) -> float | None:
    if not device.startswith("cuda"):
        return None
    return (torch.cuda.max_memory_allocated() - baseline) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--archs", nargs="+", default=["conv"])
    parser.add_argument("--mechanisms", nargs="+", default=["loop", "vmap"])
    parser.add_argument("--compile", nargs="+", default=["off"], help="off and/or on (torch.compile)")
    parser.add_argument("--cuda-graphs", nargs="+", default=["off"], help="off and/or on (CUDA only)")
    parser.add_argument("--budget-s", type=float, default=1e9, help="skip settings that start after this")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=65536, help="images rendered (spread over the grid)")
    parser.add_argument("--out", type=Path, help="folder for results.json (and profile.txt)")
    parser.add_argument("--profile", action="store_true", help="profile the fastest setting's kernels")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    images = render.render_spread(args.images, workers=os.cpu_count() or 1)
    data = torch.from_numpy(images).to(args.device)  # one copy, shared by every trainer
    total_steps = args.warmup + args.steps * args.repeats
    results = []
    settings = [(c, g) for c in args.compile for g in args.cuda_graphs]
    for arch in args.archs:
        model = ModelConfig(architecture=arch)
        for compile_setting, graphs in settings:
            if time.perf_counter() - started > args.budget_s:
                print(f"skipped (budget): {arch} compile {compile_setting} graphs {graphs}", flush=True)
                continue
            torch._dynamo.reset()
            (single,) = members(1, args, total_steps, compile_setting, graphs)
            reset_memory(args.device)
            base = torch.cuda.memory_allocated() if args.device.startswith("cuda") else 0
            trainer = Trainer(model, [single], data)
            single_rate = timed_windows(trainer.run_step, args)
            single_memory = peak_memory_mib(args.device, base)
            del trainer
            for k in args.ks:
                row_base = {
                    "arch": arch,
                    "compile": compile_setting,
                    "cuda_graphs": graphs,
                    "k": k,
                    "batch_size": args.batch_size,
                }
                results.append(
                    {
                        **row_base,
                        "mechanism": "sequential",
                        "member_steps_per_s": single_rate,  # K runs one after another: the same rate
                        "speedup": 1.0,
                        "memory_mib_per_member": single_memory,
                    }
                )
                for mechanism in args.mechanisms:
                    reset_memory(args.device)
                    base = torch.cuda.memory_allocated() if args.device.startswith("cuda") else 0
                    try:
                        ensemble = Trainer(
                            model,
                            members(k, args, total_steps, compile_setting, graphs),
                            data,
                            mechanism=mechanism,
                        )
                        rate = timed_windows(ensemble.run_step, args)
                        del ensemble
                    except Exception as error:  # noqa: BLE001 - record it and go on (a GPU lease is short)
                        results.append({**row_base, "mechanism": mechanism, "error": repr(error)[:1000]})
                        print(json.dumps(results[-1]), flush=True)
                        continue
                    memory = peak_memory_mib(args.device, base)
                    results.append(
                        {
                            **row_base,
                            "mechanism": mechanism,
                            "member_steps_per_s": k * rate,
                            "speedup": k * rate / single_rate,
                            "memory_mib_per_member": None if memory is None else memory / k,
                        }
                    )
                    print(json.dumps(results[-1]), flush=True)
                    write_report(args, results)
    write_report(args, results, show=True)
    if args.profile:
        profile_fastest(args, results, data, total_steps)


def profile_fastest(args, results: list[dict], data: torch.Tensor, total_steps: int) -> None:
    """The top kernels of the fastest ensemble row (member-steps/s), eager, to profile.txt."""
    from torch.profiler import ProfilerActivity, profile

    rows = [row for row in results if row.get("mechanism") != "sequential" and "error" not in row]
    if not rows:
        return
    best = max(rows, key=lambda row: row["member_steps_per_s"])
    model = ModelConfig(architecture=best["arch"])
    trainer = Trainer(model, members(best["k"], args, total_steps, "off"), data, mechanism=best["mechanism"])
    for _ in range(args.warmup):
        trainer.run_step()
    cuda = args.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities) as profiler:
        for _ in range(args.steps):
            trainer.run_step()
        if cuda:
            torch.cuda.synchronize()
    sort_by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = profiler.key_averages().table(sort_by=sort_by, row_limit=25)
    header = (
        f"fastest: {best['arch']} K={best['k']} {best['mechanism']} (compile {best['compile']}, "
        f"graphs {best['cuda_graphs']}: {best['member_steps_per_s']:.0f} member-steps/s); "
        f"profiled eager, {args.steps} steps, sorted by {sort_by}\n"
    )
    print(header + table, flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "profile.txt").write_text(header + table + "\n")


def write_report(args, results: list[dict], show: bool = False) -> None:
    """The report so far, to stdout (``show``) and ``--out``/results.json: a killed run keeps its rows."""
    report = {
        "machine": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "command": "python benchmarks/bench_ensemble.py " + " ".join(sys.argv[1:]),
        "steps_per_window": args.steps,
        "repeats": args.repeats,
        "results": results,
    }
    if show:
        print(json.dumps(report, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
