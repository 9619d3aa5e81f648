"""Benchmark: DCI with disentanglement_lib's gradient-boosted trees, its five factor fits one
after the other vs in parallel (threads, processes), at the fast and the dlib sample sizes.

    python benchmarks/bench_dci.py

The code is a mixed one, as a trained model's is: the five factor classes under a random
rotation, beside five noise dimensions (10 codes). Mixed codes are gbt's slow case: every
stage fits a tree per class (3+6+40+32+32) and the trees do not become pure early.
The three ways must give identical importances; the script checks that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from joblib import Parallel, delayed

from bvae.data import factors
from bvae.data.ground_truth import FactorGridData
from bvae.metrics.dci import _fit_factor
from bvae.metrics.sampling import sample_codes_and_factors


def fit_all(jobs: list[tuple], way: str) -> list:
    if way == "one_by_one":
        return [_fit_factor("gbt", 0, *job) for job in jobs]
    backend = {"prefer": "threads"} if way == "threads" else {}
    return Parallel(n_jobs=-1, **backend)(delayed(_fit_factor)("gbt", 0, *job) for job in jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    grid = FactorGridData(
        np.broadcast_to(np.zeros((1, 1), np.uint8), (factors.NUM_IMAGES, 1)),
        factors.FACTOR_NAMES,
        factors.FACTOR_SIZES,
    )
    rotation = np.linalg.qr(np.random.default_rng(0).standard_normal((5, 5)))[0]

    def mixed(classes, rng):
        return np.concatenate([classes.astype(float) @ rotation, rng.standard_normal((len(classes), 5))], 1)

    report = {}
    for size in args.sizes:
        codes, classes = sample_codes_and_factors(grid, mixed, size, np.random.default_rng(1))
        jobs = [(codes, classes[:, j], codes, classes[:, j]) for j in range(classes.shape[1])]
        seconds, results = {}, {}
        for way in ("one_by_one", "threads", "processes"):
            start = time.perf_counter()
            results[way] = fit_all(jobs, way)
            seconds[way] = round(time.perf_counter() - start, 1)
        same = all(
            np.array_equal(first[0], other[0])
            for way in ("threads", "processes")
            for first, other in zip(results["one_by_one"], results[way], strict=True)
        )
        report[size] = {"seconds": seconds, "identical_importances": same}
        print(size, json.dumps(report[size]), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps({"machine": machine, "results": report}, indent=2))


if __name__ == "__main__":
    main()
