"""Does the capacity recipe's encoder survive its first steps? (RESULTS.md, issue #17)

    python benchmarks/probe_capacity.py --variant default --steps 2000    # ~2.5 min on 2 cores

Trains Burgess et al.'s recipe (γ = 1000, C → 25 nats over 100k steps, Adam 5e-4, batch 64,
seed 0) as one ``Trainer`` on the rendered dataset, then reports the last curve row, the
largest standard deviation of a latent's posterior mean over 2,000 images (0: the code is one
constant vector) and, per encoder ReLU, the share of units active on at least one image.
Variants: ``default`` (the recipe), ``kaiming`` (Kaiming-normal weights, zero biases),
``gamma100`` (γ = 100), ``lr1e-4`` (Adam 1e-4).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from bvae.config import ModelConfig, ObjectiveConfig, TrainConfig
from bvae.data import render
from bvae.training import Trainer

VARIANTS = ("default", "kaiming", "gamma100", "lr1e-4")


def kaiming_normal_(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d | torch.nn.Linear):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)


def encoder_health(trainer: Trainer, images: np.ndarray) -> dict:
    sample = images[np.random.default_rng(0).integers(0, len(images), 2000)]
    batch = torch.from_numpy(sample).float().unsqueeze(1).contiguous(memory_format=trainer.memory_format)
    alive = []
    with torch.no_grad():
        mean, _ = trainer.model.encode(batch)
        hidden = batch
        for layer in trainer.model.encoder:
            hidden = layer(hidden)
            if isinstance(layer, torch.nn.ReLU):
                units = hidden.transpose(0, 1).flatten(1) if hidden.dim() == 4 else hidden.T
                alive.append(round(float((units > 0).any(dim=1).float().mean()), 2))
    return {"largest_sd_of_a_mean": round(float(mean.std(dim=0).max()), 4), "relu_units_ever_active": alive}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, default="default")
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    images = render.render_dataset(workers=2)
    objective = ObjectiveConfig(
        kind="capacity",
        gamma=100.0 if args.variant == "gamma100" else 1000.0,
        capacity_max_nats=25.0,
        capacity_steps=100_000,
    )
    train = TrainConfig(
        steps=args.steps,
        batch_size=64,
        learning_rate=1e-4 if args.variant == "lr1e-4" else 5e-4,
        seed=0,
        log_every=500,
    )
    trainer = Trainer(ModelConfig(), objective, train, images)
    if args.variant == "kaiming":
        kaiming_normal_(trainer.model)
    trainer.train(show_progress=False)
    last = trainer.history[-1]
    report = {
        "variant": args.variant,
        "step": last["step"],
        "reconstruction": round(last["reconstruction"], 1),
        "kl": round(last["kl"], 3),
        **encoder_health(trainer, images),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
