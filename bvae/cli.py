"""The ``bvae`` command: one subcommand per pipeline stage, plus tools.

DVC calls the stage subcommands (see ``dvc.yaml``); people call the tools. Errors that a user
can fix print one clear line (what is wrong, what to do) instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bvae import __version__

# Nothing phones home: MLflow and Prefect look up telemetry hosts in every process otherwise.
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
}


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
    from bvae.stages.train import TrainPaths, remove_checkpoint, run_train

    params = _params(args)
    nproc = params.train.nproc
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        # Data-parallel: the same command on nproc processes, launched by torchrun (DDP).
        launcher = [sys.executable, "-m", "torch.distributed.run"]  # torchrun, from this env
        command = [*launcher, "--standalone", f"--nproc_per_node={nproc}", "-m", "bvae", *sys.argv[1:]]
        logging.getLogger(__name__).info("train.nproc=%d: %s", nproc, " ".join(command))
        return subprocess.run(command, check=False).returncode
    paths = TrainPaths()
    if args.fresh and os.environ.get("RANK", "0") == "0":
        remove_checkpoint(paths)
    run_train(params, paths, show_progress=not args.quiet)
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
    from bvae.consume import load
    from bvae.data.ground_truth import DSprites
    from bvae.fileio import atomic_path, check_output_folder
    from bvae.stages.traverse import render_reports

    check_output_folder(args.out, force=args.force)  # before the model and the data load
    data = DSprites.from_shards(args.shards)
    with atomic_path(args.out, directory=True, force=args.force) as staging:
        report = render_reports(load(args.model), data, _params(args).traverse, staging)
    (args.out / "latents.json").write_text(json.dumps(report, indent=2) + "\n")
    print(args.out)
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    from bvae.stages.register import run_register

    result = run_register(_params(args))
    print(json.dumps(result.__dict__, indent=2))
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    from bvae.consume import pull

    out = pull(args.reference, args.out, force=args.force)
    print(f"pulled {args.reference} into {out.resolve()}: model.pt, mlflow_model/, MODEL_CARD.md, card.json")
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from bvae.consume import encode, load, read_images
    from bvae.fileio import atomic_path

    images, names = read_images(args.images)
    mean, logvar = encode(load(args.model), images)
    with atomic_path(args.out) as temporary:
        with open(temporary, "wb") as stream:
            np.savez(stream, latents_mean=mean, latents_logvar=logvar, names=np.array(names))
    print(f"{len(images)} images -> {args.out} (latents_mean, latents_logvar, names)")
    return 0


def _cmd_verify_data(args: argparse.Namespace) -> int:
    import time

    from bvae.data.shards import load_dataset, read_manifest, verify_shards

    manifest = read_manifest(args.shards)
    verify_shards(args.shards, manifest)
    summary = {
        "shards": len(manifest.shards),
        "images": manifest.num_images,
        "source": manifest.source,
        "digest": manifest.digest,
    }
    if args.load:
        start = time.perf_counter()
        dataset = load_dataset(args.shards, verify=False, show_progress=not args.quiet)
        summary["load_seconds"] = round(time.perf_counter() - start, 2)
        summary["resident_gib"] = round(dataset.images.nbytes / 2**30, 2)
        summary["mean_pixel"] = float(dataset.images.mean(dtype="float64"))
    print(json.dumps(summary, indent=2))
    return 0


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
        "register",
        _cmd_register,
        "stage: register the evaluated model, promote it if it beats the champion",
    )
    pull = add(
        "pull",
        _cmd_pull,
        "tool: download a registered model (NAME@ALIAS or NAME/VERSION), verified",
    )
    pull.add_argument("reference", help="e.g. bvae-dsprites@champion or bvae-dsprites/3")
    pull.add_argument("--out", type=Path, required=True)
    pull.add_argument("--force", action="store_true", help=FORCE_HELP)
    encode = add("encode", _cmd_encode, "tool: latent means and variances of images (npz/npy/PNG folder)")
    encode.add_argument("model", help="a pulled folder, model.pt, or models:/NAME@ALIAS")
    encode.add_argument("images", type=Path)
    encode.add_argument("--out", type=Path, default=Path("latents.npz"))

    verify = add("verify-data", _cmd_verify_data, "tool: check every shard against its manifest")
    verify.add_argument("--shards", type=Path, default=Path("data/shards"))
    verify.add_argument("--load", action="store_true", help="also load everything and report time and RAM")
    return parser


# Exit codes a scheduler can act on: 2 is bad input (fix it; retrying will not help),
# 75 (EX_TEMPFAIL) a network failure worth retrying later.
EXIT_BAD_INPUT, EXIT_RETRY_LATER = 2, 75


def _transient_errors() -> tuple[type[BaseException], ...]:
    from bvae.data.download import DownloadError
    from bvae.tracking import TrackingError

    return (DownloadError, TrackingError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from bvae.config import ParamsError
    from bvae.consume import ImageInputError, PullError
    from bvae.data.npz import NpzFormatError
    from bvae.data.shards import ShardError
    from bvae.fileio import OutputFolderError
    from bvae.tracking.registry import RegistryError
    from bvae.training import TrainingDiverged

    return (
        ImageInputError,
        OutputFolderError,
        TrainingDiverged,
        ParamsError,
        PullError,
        RegistryError,
        KeyError,
        NpzFormatError,
        ShardError,
        FileNotFoundError,
        ValueError,
    )


def main(argv: list[str] | None = None) -> int:
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.handler(args)
    except _transient_errors() as error:
        if args.verbose:
            raise
        print(f"bvae {args.command}: error (temporary, retry later): {error}", file=sys.stderr)
        return EXIT_RETRY_LATER
    except _user_errors() as error:
        if args.verbose:
            raise
        print(f"bvae {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
