"""Benchmark: training throughput of bvae's loop against a plain PyTorch loop, same model.

    python benchmarks/bench_train.py --repeats 3            # CPU (or the GPU, if any)
    python benchmarks/bench_train.py --device cuda --steps 2000 --batch-sizes 64

The plain loop is the common way: a ``Dataset`` returning one float tensor per index, a
shuffling ``DataLoader`` that collates them, the model in the default memory format. bvae's
loop gathers each batch by index from the uint8 dataset already on the device, and uses
channels_last / bf16 / torch.compile per ``TrainConfig``'s ``auto`` rules. Prints JSON with the
median steps/s and images/s of each.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bvae.data import render
from bvae.models import BetaVAE, ModelConfig
from bvae.objectives import ObjectiveConfig, bernoulli_nll, kl_per_latent
from bvae.runtime import select_device
from bvae.training import Member, TrainConfig, Trainer


class PerSampleDataset(Dataset):
    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.images[index]).float().unsqueeze(0)


def plain_loop(images, architecture, batch_size, steps, warmup, device) -> float:
    torch.manual_seed(0)
    model = BetaVAE(ModelConfig(architecture=architecture)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    objective = ObjectiveConfig()
    loader = DataLoader(PerSampleDataset(images), batch_size=batch_size, shuffle=True, drop_last=True)
    batches = itertools.cycle(loader)
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = next(batches).to(device)
        mean, logvar = model.encode(batch)
        logits = model.decode(model.reparameterize(mean, logvar))
        loss = bernoulli_nll(logits, batch) + objective.beta * kl_per_latent(mean, logvar).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def bvae_loop(images, architecture, batch_size, steps, warmup, device) -> float:
    config = TrainConfig(steps=warmup + steps, batch_size=batch_size, log_every=10**9, device=str(device))
    trainer = Trainer(ModelConfig(architecture=architecture), [Member(ObjectiveConfig(), config)], images)
    for _ in range(warmup):
        trainer.run_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.run_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default: by device)")
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--architectures", default="conv,mlp")
    parser.add_argument("--images", type=int, default=65536, help="dataset size to sample from")
    args = parser.parse_args()
    device = select_device(args.device)
    blocks = itertools.islice(render.iter_sprite_blocks(), max(1, args.images // 1024))
    images = np.concatenate(list(blocks))
    results = []
    for architecture in args.architectures.split(","):
        for batch_size in map(int, args.batch_sizes.split(",")):
            steps = args.steps or (1000 if device.type == "cuda" else max(10, 3840 // batch_size))
            warmup = 50 if device.type == "cuda" else 3
            rates = {"plain": [], "bvae": []}
            for _ in range(args.repeats):
                rates["plain"].append(plain_loop(images, architecture, batch_size, steps, warmup, device))
                rates["bvae"].append(bvae_loop(images, architecture, batch_size, steps, warmup, device))
            plain, ours = statistics.median(rates["plain"]), statistics.median(rates["bvae"])
            results.append(
                {
                    "architecture": architecture,
                    "batch_size": batch_size,
                    "timed_steps": steps,
                    "plain_steps_per_s": round(plain, 1),
                    "bvae_steps_per_s": round(ours, 1),
                    "plain_images_per_s": round(plain * batch_size),
                    "bvae_images_per_s": round(ours * batch_size),
                    "speedup": round(ours / plain, 2),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    )
    print(
        json.dumps(
            {
                "device": f"{device.type}: {name}",
                "cores": os.cpu_count(),
                "torch": torch.__version__,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
