"""The GPU-trained paper recipes (``gpu_recipes.py``), scored on this machine by the pipeline.

    python benchmarks/eval_recipes.py results/gpu_recipes/recipes_models.pt [--only NAME...]

For every member of ``recipes_models.pt``: a bvae model file (``<out>/<name>/model.pt``,
stamped with ``data/shards``' digest once the images it was trained on are checked to be
these), the ``evaluate`` stage's figures at disentanglement_lib's sample sizes on the mean
representation (``metrics.json``; the dataset encoded once), and the ``traverse`` outputs
(latent table, traversal grid) in ``<out>/<name>/traversals/``. No MLflow: nothing is logged.
A member whose ``metrics.json`` exists only gets its model file again, so a killed run resumes
and the model files (not in git: the bundle is DVC's) come back in seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
import yaml

from bvae.config import params_from_mapping
from bvae.consume import traverse
from bvae.data.shards import load_dataset
from bvae.model_file import save_model_file
from bvae.stages.evaluate import run_evaluate
from bvae.stages.run_files import RunFiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, help="recipes_models.pt from gpu_recipes.py")
    parser.add_argument("--out", type=Path, default=Path("results/gpu_recipes"))
    parser.add_argument("--shards", type=Path, default=Path("data/shards"))
    parser.add_argument("--only", nargs="*", help="member names (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    bundle = torch.load(args.models, map_location="cpu", weights_only=True)
    dataset = load_dataset(args.shards)
    digest = hashlib.sha256(np.ascontiguousarray(dataset.images).tobytes()).hexdigest()
    if digest != bundle["images_sha256"]:
        raise SystemExit(f"{args.shards} holds other images than the models were trained on")
    mapping = yaml.safe_load(Path("params.yaml").read_text())
    mapping["evaluate"].update(
        {
            "sample_sizes": "dlib",
            "representations": ["mean"],
            "baselines": [],  # the same for every member; BENCHMARKS.md has them
            "encode_all": "on",  # one pass over the dataset instead of ~2M encodes per member
            "device": "cpu",
        }
    )
    params = params_from_mapping(mapping)
    # One seed of each recipe first: a cut-short run still has both.
    for member in sorted(bundle["members"], key=lambda m: m["name"][-1]):
        name = member["name"]
        if args.only and name not in args.only:
            continue
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        model_path = folder / "model.pt"
        config = member["config"]
        # A bundle from before model.init: its members had PyTorch's default initialisation.
        config = {**config, "model": {"init": "pytorch", **config["model"]}}
        save_model_file(
            model_path,
            config=config,
            state_dict=member["state_dict"],
            step=bundle["step"],
            data_digest=dataset.manifest.digest,
            mlflow_run_id=None,
        )
        metrics = folder / "metrics.json"
        if metrics.exists():
            continue
        (folder / "curves.json").write_text(json.dumps(member["history"]) + "\n")
        traverse(str(model_path), args.shards, params.traverse, folder / "traversals", force=True)
        files = RunFiles(model=model_path, run_file=folder / "no-run.json", metrics=metrics)
        run_evaluate(params, files, shards=args.shards)
        logging.info("%s done", name)


if __name__ == "__main__":
    main()
