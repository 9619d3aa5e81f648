"""The ``bvae`` command: one subcommand per pipeline stage, plus tools.

DVC calls the stage subcommands (see ``dvc.yaml``); people call the tools. Errors that a user
can fix print one clear line (what is wrong, what to do) instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from bvae import __version__
from bvae.errors import EXIT_BAD_INPUT, EXIT_RETRY_LATER, BadInput, Transient, machine_error
from bvae.telemetry import TELEMETRY_OFF


def _params(args: argparse.Namespace):
    from bvae.config import load_params

    return load_params(args.params)


def _cmd_download(args: argparse.Namespace) -> int:
    from bvae.stages.download import run_download

    config = _params(args).data
    if args.source:
        config = config.model_copy(update={"source": args.source})
    run_download(config, args.out, show_progress=not args.quiet)
    return 0


def _cmd_shard(args: argparse.Namespace) -> int:
    from bvae.fileio import check_output_folder
    from bvae.stages.shard import run_shard

    check_output_folder(args.out, force=args.force)  # before the params and the npz are read
    run_shard(_params(args).shard, args.npz, args.out, show_progress=not args.quiet, force=args.force)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from bvae.distributed import relaunch_under_torchrun
    from bvae.stages.train import run_train

    params = _params(args)
    if params.train.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return relaunch_under_torchrun(params.train.nproc, ["-m", "bvae", *sys.argv[1:]])
    run_train(params, fresh=args.fresh, show_progress=not args.quiet)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bvae.stages.evaluate import run_evaluate

    run_evaluate(_params(args), score_model=not args.baselines_only)
    return 0


def _cmd_traverse(args: argparse.Namespace) -> int:
    if args.model is None:  # the DVC stage
        from bvae.stages.traverse import run_traverse

        run_traverse(_params(args), force=args.force)
        return 0
    from bvae.consume import traverse
    from bvae.fileio import check_output_folder

    check_output_folder(args.out, force=args.force)  # before params.yaml is read
    traverse(args.model, args.shards, _params(args).traverse, args.out, force=args.force)
    print(args.out)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from bvae.stages.report import run_report

    print(run_report(_params(args)))
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    from bvae.stages.register import run_register

    result = run_register(_params(args))
    print(json.dumps(result.__dict__, indent=2))
    return 0


def _cmd_sweep_train(args: argparse.Namespace) -> int:
    from bvae.stages.train import run_sweep_train

    run_sweep_train(_params(args), fresh=args.fresh, show_progress=not args.quiet)
    return 0


def _cmd_sweep_baselines(args: argparse.Namespace) -> int:
    from bvae.stages.sweep_baselines import run_sweep_baselines

    run_sweep_baselines(_params(args))
    return 0


def _cmd_sweep_evaluate(args: argparse.Namespace) -> int:
    from bvae.stages.sweep_evaluate import run_sweep_evaluate

    run_sweep_evaluate(_params(args))
    return 0


def _cmd_sweep_compare(args: argparse.Namespace) -> int:
    from bvae.stages.sweep_compare import run_sweep_compare

    print(json.dumps(run_sweep_compare(_params(args)), indent=2))
    return 0


def _cmd_sweep_register(args: argparse.Namespace) -> int:
    from bvae.stages.sweep_register import run_sweep_register

    print(json.dumps(run_sweep_register(_params(args)), indent=2))
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    from bvae.consume import pull

    out = pull(args.reference, args.out, force=args.force)
    print(f"pulled {args.reference} into {out.resolve()}: model.pt, mlflow_model/, MODEL_CARD.md, card.json")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from bvae.compare import experiments_table, versions_table

    if args.registry:
        name = args.name or _params(args).registry.model_name
        print(versions_table(name, markdown=args.md))
    else:
        print(experiments_table(num=args.num, markdown=args.md, sweep=args.sweep))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from bvae.serving import serve

    serve(args.reference, args.host, args.port)
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    from bvae.consume import encode_file

    count = encode_file(args.model, args.images, args.out)
    print(f"{count} images -> {args.out} (latents_mean, latents_logvar, names)")
    return 0


def _cmd_verify_data(args: argparse.Namespace) -> int:
    from bvae.data.shards import verify_summary

    print(json.dumps(verify_summary(args.shards, load=args.load, show_progress=not args.quiet), indent=2))
    return 0


def _cmd_recipe(args: argparse.Namespace) -> int:
    import shlex
    import subprocess

    from bvae.recipes import load_recipe, recipe_names, recipe_params

    if args.action == "list":
        for name in recipe_names():
            recipe = load_recipe(name)
            print(f"{name:<20} {recipe.pipeline:<16} {recipe.description}")
        return 0
    if args.name is None:
        raise BadInput(f"`bvae recipe {args.action}` needs a recipe name; `bvae recipe list` lists them")
    recipe = load_recipe(args.name)
    recipe_params(recipe, args.params.parent)  # a recipe that makes bad params fails here, not in DVC
    command = recipe.command(args.dvc_args)
    if args.action == "show":
        print(shlex.join(command))
        return 0
    print(f"bvae recipe: {shlex.join(command)}", file=sys.stderr, flush=True)
    beside = Path(sys.executable).parent / "dvc"  # this environment's DVC, as the flows run it
    return subprocess.run([str(beside) if beside.exists() else "dvc", *command[1:]]).returncode


FORCE_HELP = (
    "replace --out even if it holds files bvae did not write (never the working directory, "
    "its parents, your home folder or /)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bvae",
        description=(
            "Disentangled representations of dSprites with beta-VAEs. The pipeline stages "
            "(download, shard, ...) are run by `dvc repro`; you can also call them directly."
        ),
    )
    parser.add_argument("--version", action="version", version=f"bvae {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        sub.add_argument(
            "--params",
            default="params.yaml",
            type=Path,
            help="parameter file (default: params.yaml)",
        )
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        return sub

    download = add(
        "download",
        _cmd_download,
        "stage: fetch (MD5-verified) or render dSprites -> data/raw/dsprites.npz",
    )
    download.add_argument("--out", type=Path, default=Path("data/raw/dsprites.npz"))
    download.add_argument("--source", choices=["auto", "official", "procedural"], help="override data.source")

    shard = add("shard", _cmd_shard, "stage: cut the npz into verified HDF5 shards -> data/shards/")
    shard.add_argument("--npz", type=Path, default=Path("data/raw/dsprites.npz"))
    shard.add_argument("--out", type=Path, default=Path("data/shards"))
    shard.add_argument("--force", action="store_true", help=FORCE_HELP)

    train = add(
        "train",
        _cmd_train,
        "stage: train the beta-VAE (resuming a killed run) -> models/, MLflow run",
    )
    train.add_argument("--fresh", action="store_true", help="ignore models/checkpoint.pt")

    evaluate = add(
        "evaluate",
        _cmd_evaluate,
        "stage: disentanglement metrics of the model and baselines -> reports/metrics.json",
    )
    evaluate.add_argument(
        "--baselines-only", action="store_true", help="score only the baselines (no trained model)"
    )

    traverse = add(
        "traverse",
        _cmd_traverse,
        "stage: latent traversals, reconstructions, latent table -> reports/traversals/; "
        "with MODEL, the same for a pulled or registered model",
    )
    traverse.add_argument(
        "model", nargs="?", help="models:/NAME@ALIAS, NAME/VERSION, a pulled folder or model.pt"
    )
    traverse.add_argument("--out", type=Path, default=Path("traversals"), help="with MODEL: output folder")
    traverse.add_argument(
        "--shards", type=Path, default=Path("data/shards"), help="seed images come from here"
    )
    traverse.add_argument("--force", action="store_true", help=FORCE_HELP)

    add(
        "report",
        _cmd_report,
        "stage: one self-contained HTML page of the run's results -> reports/report.html, MLflow run",
    )
    add(
        "register",
        _cmd_register,
        "stage: register the evaluated model, promote it if it beats the champion",
    )
    sweep_train = add(
        "sweep-train",
        _cmd_sweep_train,
        "stage (sweeps/dvc.yaml): train sweep.grid as one ensemble (resuming a killed one) -> sweeps/train/",
    )
    sweep_train.add_argument("--fresh", action="store_true", help="ignore sweeps/checkpoint.pt")
    add(
        "sweep-baselines",
        _cmd_sweep_baselines,
        "stage: the baselines' figures, once for every sweep member -> sweeps/baselines.json",
    )
    add(
        "sweep-evaluate",
        _cmd_sweep_evaluate,
        "stage: evaluate, traverse and report every sweep member, in parallel -> sweeps/members/",
    )
    add(
        "sweep-compare",
        _cmd_sweep_compare,
        "stage: the sweep's comparison table and chart -> sweeps/comparison.*",
    )
    add(
        "sweep-register",
        _cmd_sweep_register,
        "stage: register every sweep member, gate the best -> sweeps/registered.json",
    )
    pull = add(
        "pull",
        _cmd_pull,
        "tool: download a registered model (NAME@ALIAS or NAME/VERSION), verified",
    )
    pull.add_argument("reference", help="e.g. bvae-dsprites@champion or bvae-dsprites/3")
    pull.add_argument("--out", type=Path, required=True)
    pull.add_argument("--force", action="store_true", help=FORCE_HELP)
    compare = add(
        "compare",
        _cmd_compare,
        "tool: DVC experiments (or, with --registry, a model's registered versions) in one narrow table",
    )
    compare.add_argument(
        "--registry", action="store_true", help="the registered versions, not the experiments"
    )
    compare.add_argument("--sweep", action="store_true", help="each experiment's sweep members, one row each")
    compare.add_argument("--name", help="the registered model (default: registry.model_name in params.yaml)")
    compare.add_argument("-n", "--num", type=int, default=1, help="experiments of this many commits back")
    compare.add_argument("--md", action="store_true", help="a Markdown table")
    serve = add(
        "serve",
        _cmd_serve,
        "tool: serve a model over HTTP: MLflow's scoring server with bvae's request limits",
    )
    serve.add_argument("reference", help="NAME@ALIAS, NAME/VERSION, models:/..., or a pulled folder")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5001)
    encode = add("encode", _cmd_encode, "tool: latent means and variances of images (npz/npy/PNG folder)")
    encode.add_argument("model", help="a pulled folder, model.pt, or models:/NAME@ALIAS")
    encode.add_argument("images", type=Path)
    encode.add_argument("--out", type=Path, default=Path("latents.npz"))

    recipe = add(
        "recipe",
        _cmd_recipe,
        "tool: the papers' recipes (recipes/*.yaml): list them, show or run one as a DVC experiment",
    )
    recipe.add_argument("action", choices=["list", "show", "run"])
    recipe.add_argument("name", nargs="?", help="a recipe: recipes/NAME.yaml")
    recipe.add_argument(
        "dvc_args",
        nargs=argparse.REMAINDER,
        help="more `dvc exp run` arguments, after the recipe's (e.g. -S train.steps=2000, --queue)",
    )

    verify = add("verify-data", _cmd_verify_data, "tool: check every shard against its manifest")
    verify.add_argument("--shards", type=Path, default=Path("data/shards"))
    verify.add_argument("--load", action="store_true", help="also load everything and report time and RAM")
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Bad input exits 2, and so does what the OS says about the machine (a full disk, no
    # permission: bvae.errors.MACHINE_ERRNOS); a transient failure 75 (with what to do, in one
    # line); anything else is a bug and keeps its traceback (exit 1). --verbose shows every traceback.
    try:
        return args.handler(args)
    except Transient as error:
        if args.verbose:
            raise
        print(f"bvae {args.command}: error (temporary, retry later): {error}", file=sys.stderr)
        return EXIT_RETRY_LATER
    except BadInput as error:
        if args.verbose:
            raise
        print(f"bvae {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        line = machine_error(error)
        if line is None or args.verbose:
            raise
        print(f"bvae {args.command}: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
