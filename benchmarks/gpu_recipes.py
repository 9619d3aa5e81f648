"""The papers' recipes on a bare GPU machine (issue #17): one ensemble, resumable across calls.

    PYTHONPATH=. python benchmarks/gpu_recipes.py --out $OUT --budget-s 520 [--resume DIR]

Trains, as one ``Trainer`` on procedurally rendered dSprites (the pipeline's offline
data, bit-identical to ``data/shards`` here), for ``--steps`` steps, the recipes of
``recipes/`` (their one home) at seeds ``--seeds``:

- ``higgins-beta4-conv``: Higgins et al. 2017's β-VAE, β = 4, Adam 1e-4, batch 64;
- ``burgess-capacity``: Burgess et al. 2018's capacity objective, γ = 1000, C → 25 nats over
  100k steps, Adam 5e-4, batch 64, Kaiming-normal initial weights.

A device machine allows 10 minutes a command, so training stops once ``--budget-s`` has passed
(at a log step) and leaves in ``--out``: the ensemble checkpoint cut into parts of at most
15 MiB (``recipes.ckpt.partN``: the device tool returns files up to 16 MiB), every member's
weights and curves (``recipes_models.pt``) and ``recipes.json`` (progress, speed, the images'
SHA-256). ``--resume DIR`` continues from the parts in DIR, exactly where they stopped.
``benchmarks/eval_recipes.py`` turns ``recipes_models.pt`` into model files on the CPU machine.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import time
from pathlib import Path

import torch

from bvae.config import ModelConfig
from bvae.data import render
from bvae.recipes import load_recipe, recipe_params
from bvae.training import Member, Trainer

PART_BYTES = 15 * 2**20
LOG_EVERY = 1000


# The recipes trained, each under its short member name (the folders of results/gpu_recipes/).
RECIPES = {"higgins-beta4-conv": "higgins_beta4", "burgess-capacity": "burgess_capacity"}


def recipe_members(
    steps: int, seeds: list[int], device: str, log_every: int, **train_settings
) -> tuple[ModelConfig, list[str], list[Member]]:
    """Every recipe of ``RECIPES`` (read from ``recipes/``, on top of ``params.yaml``) at each seed."""
    names, members, models = [], [], set()
    for seed in seeds:
        for recipe, short_name in RECIPES.items():
            settings = {"steps": steps, "seed": seed, "device": device, "log_every": log_every}
            settings.update(checkpoint_every=steps, **train_settings)
            params = recipe_params(
                load_recipe(recipe), Path("."), {f"train.{k}": v for k, v in settings.items()}
            )
            models.add(params.model)
            names.append(f"{short_name}_seed{seed}")
            members.append(Member(params.objective, params.train))
    if len(models) != 1:
        raise SystemExit(f"the recipes {list(RECIPES)} have different model sections: {models}")
    return models.pop(), names, members


def save_parts(payload: dict, out: Path, stem: str) -> list[str]:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    names = []
    for number, start in enumerate(range(0, len(data), PART_BYTES)):
        name = f"{stem}.part{number}"
        (out / name).write_bytes(data[start : start + PART_BYTES])
        names.append(name)
    return names


def load_parts(folder: Path, stem: str) -> dict:
    parts = sorted(folder.glob(f"{stem}.part*"), key=lambda p: int(p.suffix.removeprefix(".part")))
    data = b"".join(p.read_bytes() for p in parts)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def steps_per_second(trainer: Trainer, steps: int) -> float:
    for _ in range(20):
        trainer.run_step()
    synchronize = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.run_step()
    synchronize()
    return steps / (time.perf_counter() - start)


class OutOfTime(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget-s", type=float, default=520)
    parser.add_argument("--resume", type=Path)
    parser.add_argument("--mechanism", default="choose", choices=["choose", "vmap", "loop"])
    parser.add_argument("--cuda-graphs", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of this script")
    parser.add_argument("--log-every", type=int, default=LOG_EVERY)
    parser.add_argument("--probe-steps", type=int, default=200)
    args = parser.parse_args()
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    images = render.render_dataset(workers=16)
    digest = hashlib.sha256(images.tobytes()).hexdigest()
    data = torch.from_numpy(images).to(args.device)
    settings = {"device": args.device, "log_every": args.log_every}
    state = load_parts(args.resume, "recipes.ckpt") if args.resume else None
    report: dict = {
        "images_sha256": digest,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    if state is not None:
        mechanism, graphs = state["mechanism"], state["cuda_graphs"]
    else:
        graphs = args.cuda_graphs
        mechanism = args.mechanism
        if mechanism == "choose":  # the faster for these members, timed on throwaway ensembles
            rates, errors = {}, {}
            for attempt in (graphs, "off"):  # graphs as asked; if that fails, eager steps
                graphs = attempt
                for candidate in ("vmap", "loop"):
                    try:
                        model, _, probe = recipe_members(
                            args.steps, args.seeds, **settings, cuda_graphs=graphs
                        )
                        probe_trainer = Trainer(model, probe, data, mechanism=candidate)
                        rates[candidate] = steps_per_second(probe_trainer, args.probe_steps)
                        del probe_trainer
                    except Exception as error:  # noqa: BLE001 - say why, and fall back
                        errors[f"{candidate} graphs {graphs}"] = repr(error)[:1000]
                if len(rates) == 2:
                    break
                rates.clear()
            mechanism = max(rates, key=rates.get)
            report["mechanism_probe_steps_per_s"] = rates
            report["probe_errors"] = errors
    model, names, members = recipe_members(args.steps, args.seeds, **settings, cuda_graphs=graphs)
    trainer = Trainer(model, members, data, mechanism=mechanism)
    if state is not None:
        if state["images_sha256"] != digest or state["names"] != names:
            raise SystemExit("the checkpoint is of other images or members")
        trainer.load_state_dict(state["ensemble"])
    first_step, train_started = trainer.step, time.perf_counter()
    report.update(
        {"names": names, "mechanism": mechanism, "cuda_graphs": graphs, "use_graphs": trainer.runtime.graphs}
    )

    def save() -> None:
        elapsed = time.perf_counter() - train_started
        report.update(
            {
                "step": trainer.step,
                "steps_this_call": trainer.step - first_step,
                "steps_per_s_this_call": (trainer.step - first_step) / elapsed,
                "seconds_this_call": time.perf_counter() - started,
                "last_rows": {n: h[-1] if h else None for n, h in zip(names, trainer.histories, strict=True)},
            }
        )
        payload = {
            "images_sha256": digest,
            "names": names,
            "mechanism": mechanism,
            "cuda_graphs": graphs,
            "ensemble": trainer.state_dict(),
        }
        report["parts"] = save_parts(payload, args.out, "recipes.ckpt")
        models = {
            "images_sha256": digest,
            "step": trainer.step,
            "members": [
                {
                    "name": name,
                    "config": trainer.member_config(k),
                    "state_dict": trainer.models[k].state_dict(),
                    "history": trainer.histories[k],
                }
                for k, name in enumerate(names)
            ],
        }
        torch.save(models, args.out / "recipes_models.pt")
        (args.out / "recipes.json").write_text(json.dumps(report, indent=2) + "\n")

    def on_log(current: Trainer) -> None:
        rows = {n: h[-1] for n, h in zip(names, current.histories, strict=True)}
        brief = {n: (round(r["reconstruction"], 1), round(r["kl"], 2)) for n, r in rows.items()}
        print(current.step, round(time.perf_counter() - started), json.dumps(brief), flush=True)
        if time.perf_counter() - started > args.budget_s and current.step < args.steps:
            raise OutOfTime

    try:
        trainer.train(on_log=on_log, show_progress=False)
    except OutOfTime:
        pass
    save()
    print(json.dumps({k: v for k, v in report.items() if k != "last_rows"}, indent=2))


if __name__ == "__main__":
    main()
