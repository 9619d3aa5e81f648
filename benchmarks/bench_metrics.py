"""Benchmark: the full metric suite at disentanglement_lib's sample sizes on one representation.

    python benchmarks/bench_metrics.py --repeats 3

Representations: the ground-truth factors, and a 10-dimensional code table (what a model's
encoded representation becomes once encoded: the metrics then only look codes up). DCI runs
with the fast ``forest`` estimator and, once, with disentanglement_lib's ``gbt``. Target
(issue 4): ≤ 60 s for the suite with the fast estimator on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from bvae.data import factors
from bvae.data.ground_truth import FactorGridData
from bvae.metrics import compute_all, metric_sizes
from bvae.metrics.sampling import factor_representation, table_representation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    grid = FactorGridData(
        np.broadcast_to(np.zeros((1, 1), np.uint8), (factors.NUM_IMAGES, 1)),
        factors.FACTOR_NAMES,
        factors.FACTOR_SIZES,
    )
    table = np.random.default_rng(0).standard_normal((factors.NUM_IMAGES, 10)).astype(np.float32)
    cases = {
        "ground_truth/forest": (factor_representation, "forest", args.repeats),
        "code_table_10d/forest": (table_representation(grid, table), "forest", args.repeats),
        "ground_truth/gbt": (factor_representation, "gbt", 1),
    }
    report = {}
    for name, (represent, estimator, repeats) in cases.items():
        totals, per_metric = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            results = compute_all(grid, represent, sizes=metric_sizes("dlib"), dci_estimator=estimator)
            totals.append(time.perf_counter() - start)
            per_metric.append(results["seconds"])
        report[name] = {
            "median_total_seconds": round(statistics.median(totals), 1),
            "runs": [round(t, 1) for t in totals],
            "median_seconds_per_metric": {
                metric: round(statistics.median(run[metric] for run in per_metric), 1)
                for metric in per_metric[0]
            },
        }
        print(name, json.dumps(report[name]), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps({"machine": machine, "results": report}, indent=2))


if __name__ == "__main__":
    main()
