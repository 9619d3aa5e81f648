"""Benchmark: render, shard and load the full 737,280-image dSprites grid.

    python benchmarks/bench_data.py --repeats 3

Prints one JSON object with the median seconds of each step and the peak RSS of loading.
Targets (issue 2): render + shard <= 60 s, load <= 10 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

from bvae.config import ShardConfig
from bvae.data.shards import load_dataset
from bvae.fileio import file_digest, write_json
from bvae.stages.download import record_path, render_npz
from bvae.stages.shard import run_shard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    timings: dict[str, list[float]] = {"render_npz": [], "shard": [], "load": []}
    with tempfile.TemporaryDirectory() as folder:
        npz_path, shard_dir = Path(folder) / "dsprites.npz", Path(folder) / "shards"
        for _ in range(args.repeats):
            start = time.perf_counter()
            render_npz(npz_path)
            timings["render_npz"].append(time.perf_counter() - start)
            md5 = file_digest(npz_path, "md5")
            write_json(
                record_path(npz_path),
                {"source": "procedural", "md5": md5, "sha256": file_digest(npz_path)},
            )
            start = time.perf_counter()
            run_shard(ShardConfig(), npz_path, shard_dir, show_progress=False)
            timings["shard"].append(time.perf_counter() - start)
            start = time.perf_counter()
            dataset = load_dataset(shard_dir)
            timings["load"].append(time.perf_counter() - start)
            del dataset
    medians = {step: round(statistics.median(values), 2) for step, values in timings.items()}
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}",
                "median_seconds": medians,
                "render_plus_shard_seconds": round(medians["render_npz"] + medians["shard"], 2),
                "all_seconds": {step: [round(v, 2) for v in values] for step, values in timings.items()},
                "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
