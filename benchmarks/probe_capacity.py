"""Does a recipe's encoder survive its first steps? (RESULTS.md, issues #17 and #26)

    python benchmarks/probe_capacity.py --recipe burgess-capacity --init kaiming --steps 2000
    python benchmarks/probe_capacity.py --init pytorch              # params.yaml itself (β = 4)
    python benchmarks/probe_capacity.py --recipe burgess-capacity --set objective.gamma=100

Trains ``recipes/NAME.yaml`` on top of ``params.yaml`` (or ``params.yaml`` alone) for
``--steps`` steps as one ``Trainer`` on the rendered dataset (~2.5 min per 2,000 steps on 2
cores), then prints one JSON line: the last curve row, the curve of ``largest_mean_sd`` (the
largest sd across a batch of a latent's posterior mean; 0: one code for every image), the
step the collapse detector first fired (bvae.collapse), and, over 2,000 images, the largest
sd of a latent's mean and, per encoder ReLU, the share of units active on at least one
image. ``--out DIR`` also writes a model file there, for ``bvae traverse --model``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from bvae import collapse
from bvae.data import render
from bvae.model_file import save_model_file
from bvae.overrides import validate_overrides
from bvae.recipes import load_recipe
from bvae.training import Member, Trainer


def encoder_health(trainer: Trainer, images: np.ndarray) -> dict:
    sample = images[np.random.default_rng(0).integers(0, len(images), 2000)]
    batch = torch.from_numpy(sample).float().unsqueeze(1).contiguous(memory_format=trainer.memory_format)
    alive = []
    with torch.no_grad():
        trainer.models[0].eval()
        mean, _ = trainer.models[0].encode(batch)
        hidden = batch
        for layer in trainer.models[0].encoder:
            hidden = layer(hidden)
            if isinstance(layer, torch.nn.ReLU):
                units = hidden.transpose(0, 1).flatten(1) if hidden.dim() == 4 else hidden.T
                alive.append(round(float((units > 0).any(dim=1).float().mean()), 2))
    return {"largest_sd_of_a_mean": round(float(mean.std(dim=0).max()), 4), "relu_units_ever_active": alive}


def probe_params(recipe: str | None, init: str | None, steps: int, settings: list[str]):
    """``params.yaml``, the recipe's keys, then the probe's (``--set`` values read as YAML)."""
    overrides = load_recipe(recipe).overrides if recipe else {}
    overrides = {**overrides, "train.steps": steps, **({"model.init": init} if init else {})}
    for setting in settings:
        key, _, value = setting.partition("=")
        overrides[key] = yaml.safe_load(value)
    return validate_overrides(Path("."), overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", help="a recipes/NAME.yaml (default: params.yaml alone)")
    parser.add_argument("--init", choices=["kaiming", "glorot", "pytorch"])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings")
    parser.add_argument("--out", type=Path, help="write model.pt and curves.json here")
    args = parser.parse_args()
    params = probe_params(args.recipe, args.init, args.steps, args.settings)
    images = render.render_dataset(workers=2)
    trainer = Trainer(params.model, [Member(params.objective, params.train)], images)
    trainer.train(show_progress=False)
    last = trainer.histories[0][-1]
    history = trainer.histories[0]
    fired = [row["step"] for row in history if collapse.is_collapsed(row["kl"], row["largest_mean_sd"])]
    report = {
        "recipe": args.recipe or "params.yaml",
        "init": params.model.init,
        "settings": args.settings,
        "step": last["step"],
        "reconstruction": round(last["reconstruction"], 1),
        "kl": round(last["kl"], 3),
        "active_latents": sum(last[f"kl_z{k}"] > 0.1 for k in range(params.model.latent_dim)),
        **encoder_health(trainer, images),
        "collapse_first_seen": fired[0] if fired else None,
        "collapse_at_end": bool(fired) and fired[-1] == last["step"],
        "largest_mean_sd_curve": [
            [row["step"], round(row["largest_mean_sd"], 4)] for row in trainer.histories[0]
        ],
        "kl_curve": [[row["step"], round(row["kl"], 4)] for row in trainer.histories[0]],
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        save_model_file(
            args.out / "model.pt",
            config=trainer.config_dict(),
            state_dict=trainer.models[0].to(memory_format=torch.contiguous_format).state_dict(),
            step=trainer.step,
            data_digest="procedural-render",
            mlflow_run_id=None,
        )
        (args.out / "curves.json").write_text(json.dumps(trainer.histories[0]) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
