"""Using registered models: pull one with its card, load it, encode images with it.

Nothing pulled from a registry is unpickled: ``model.pt`` loads with
``torch.load(weights_only=True)``, and the MLflow model is a pyfunc from code around a
``torch.export`` archive (``bvae.tracking.served_model``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from bvae.errors import BadInput, MissingInput
from bvae.fileio import atomic_path, check_output_folder, file_digest, write_json
from bvae.model_file import load_model, weights_digest
from bvae.models import BetaVAE
from bvae.report_keys import HEADLINE, headline_keys
from bvae.representations import torch_encoder
from bvae.tables import markdown_table
from bvae.tracking import flatten, registry

log = logging.getLogger(__name__)

MODEL_FILE_ARTIFACT = "model_file/model.pt"


class PullError(BadInput, RuntimeError):
    """What was downloaded does not match what the registry recorded."""


EVALUATION_ARTIFACT = "evaluation/metrics.json"  # what the evaluate stage logged


def headline_table(evaluation: dict | None, selection_metric: str | None) -> list[dict]:
    """The card's first table: the headline figures, the model's beside each baseline's."""
    if not evaluation:
        return []
    flat = flatten(evaluation)
    baselines = sorted(evaluation.get("baselines") or {})
    rows = []
    for key in headline_keys(selection_metric or HEADLINE["factor_vae"]):
        if key not in flat:
            continue
        score = key.split(".", 2)[2] if key.startswith("model.") else None  # mig.discrete_mig
        rows.append(
            {
                "figure": key,
                "model": flat[key],
                **{name: flat.get(f"baselines.{name}.{score}") if score else None for name in baselines},
            }
        )
    return rows


def _card_markdown(card: dict) -> str:
    """Headline figures first, beside the baselines; then lineage; then params."""
    version = card["version"]
    tags = version["tags"]
    rows = card.get("headline") or []
    columns = [key for key in (rows[0] if rows else {}) if key not in ("figure", "model")]
    lines = [
        f"# {version['name']} version {version['version']}",
        "",
        f"Aliases: {', '.join('@' + a for a in version['aliases']) or 'none'}. "
        f"MLflow run `{version['run_id']}`.",
        f"A {tags.get('architecture', '?')} β-VAE, {tags.get('objective', '?')} objective, "
        f"{tags.get('train.steps', '?')} steps on the {tags.get('data_source', '?')} dSprites.",
        "",
        "## Headline figures",
        "",
    ]
    if rows:
        header = ["figure", "this model", *(f"baseline: {c}" for c in columns)]
        body = [[row["figure"], row["model"], *(row[c] for c in columns)] for row in rows]
        lines.append(markdown_table(header, body))
        protocol = card.get("protocol") or {}
        if protocol and not protocol.get("comparable_to_dlib"):
            differs = protocol.get("differs_from_dlib")
            lines += ["", f"Not comparable with disentanglement_lib's figures: {differs}."]
    else:
        lines.append("The run has no evaluation (`evaluation/metrics.json`).")
    lines += [
        "",
        "Every figure: `card.json` (`evaluation`) and the run's `evaluation/figures.json`.",
        "",
        "## Lineage",
        *(f"- {key}: `{value}`" for key, value in sorted(tags.items()) if not key.startswith("metric.")),
        "",
        "## Params",
        *(f"- {key}: `{value}`" for key, value in sorted(card["params"].items())),
        "",
    ]
    return "\n".join(lines)


def _evaluation(run_id: str, folder: Path) -> dict | None:
    """The run's ``evaluation/metrics.json``, or None when it has none (never evaluated)."""
    try:
        return json.loads(registry.download_run_artifact(run_id, EVALUATION_ARTIFACT, folder).read_text())
    except Exception as error:  # noqa: BLE001 - MLflow raises its own types for a missing artifact
        log.warning("run %s has no %s (%s): the card lists no figures", run_id, EVALUATION_ARTIFACT, error)
        return None


def pull(reference: str, out_dir: str | os.PathLike, *, force: bool = False) -> Path:
    """Download ``NAME@ALIAS`` / ``NAME/VERSION``: weights + config, MLflow model, model card.

    ``out_dir`` is replaced whole, so it must be new, empty or an earlier pull (``force``:
    any folder but the working directory, its parents, home and ``/``)."""
    out_dir = Path(out_dir)
    check_output_folder(out_dir, force=force)
    version = registry.resolve(reference)
    with atomic_path(out_dir, directory=True, force=force) as staging:
        registry.download_model(f"models:/{version.name}/{version.version}", staging / "mlflow_model")
        downloaded = registry.download_run_artifact(version.run_id, MODEL_FILE_ARTIFACT, staging / "weights")
        os.replace(downloaded, staging / "model.pt")
        shutil.rmtree(staging / "weights", ignore_errors=True)
        expected_file = version.tags.get("model_file_sha256")
        actual_file = file_digest(staging / "model.pt")
        if expected_file and actual_file != expected_file:
            raise PullError(
                f"downloaded model.pt has SHA-256 {actual_file}, the registry recorded {expected_file}"
            )
        model = load_model(staging / "model.pt")
        if weights_digest(model) != version.tags.get("weights_digest"):
            raise PullError("the downloaded weights do not match the registered weights digest")
        summary = registry.run_summary(version.run_id)
        evaluation = _evaluation(version.run_id, staging / "evaluation")
        shutil.rmtree(staging / "evaluation", ignore_errors=True)
        card = {
            "version": {
                "name": version.name,
                "version": version.version,
                "aliases": list(version.aliases or []),
                "run_id": version.run_id,
                "source": version.source,
                "tags": dict(version.tags),
            },
            "headline": headline_table(evaluation, version.tags.get("selection_metric")),
            "protocol": (evaluation or {}).get("protocol"),
            "evaluation": evaluation,
            "metrics": summary["metrics"],
            "params": summary["params"],
        }
        (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        (staging / "MODEL_CARD.md").write_text(_card_markdown(card))
    log.info("pulled %s version %s into %s (verified)", version.name, version.version, out_dir)
    return out_dir


def load(reference: str | os.PathLike) -> BetaVAE:
    """A model from a pulled folder, a ``model.pt`` file, or ``models:/NAME@ALIAS`` (pulled to a temp dir)."""
    path = Path(str(reference))
    if path.is_dir():
        return load_model(path / "model.pt")
    if path.is_file():
        return load_model(path)
    with tempfile.TemporaryDirectory() as folder:
        return load_model(pull(str(reference), Path(folder) / "model") / "model.pt")


class ImageInputError(BadInput, ValueError):
    """Images ``bvae encode`` cannot take as dSprites images; the message says what was found."""


def read_images(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Binary 64×64 single-channel images as float32 ``(n, 64, 64)`` of 0/1, with their names.

    From an npz (the ``imgs`` array, as in dSprites' file), an npy, or a folder of PNGs
    (mode ``1`` or ``L``). Pixels must be 0/1 (dSprites' own) or 0/255; anything else (gray
    levels, NaN, colour, other shapes) is refused with what was found.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path} not found: give an .npz (key imgs), an .npy, or a folder of PNGs")
    if path.is_dir():
        pixels, names = _read_png_folder(path)
    elif path.suffix in (".npz", ".npy"):
        pixels = _read_array(path)
        names = [str(i) for i in range(len(pixels))]
    else:
        raise ImageInputError(f"{path}: give an .npz (key imgs), an .npy, or a folder of PNGs")
    return binary_images(pixels, str(path)), names


def _read_array(path: Path) -> np.ndarray:
    """The images of an .npy, or of an .npz's ``imgs``: numbers only (no pickled objects)."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            if "imgs" not in archive.files:
                raise ImageInputError(
                    f"{path} has no 'imgs' array (it holds {', '.join(archive.files) or 'nothing'}): "
                    "save the images under the key imgs, as dSprites' own file does"
                )
            return archive["imgs"]
    except ValueError as error:  # object arrays (allow_pickle=False), a malformed header
        raise ImageInputError(f"{path} holds no array of numbers numpy can read ({error})") from None
    except (EOFError, zipfile.BadZipFile) as error:
        raise ImageInputError(f"{path} is truncated or not a numpy file ({error})") from None


def _read_png_folder(path: Path) -> tuple[np.ndarray, list[str]]:
    from PIL import Image

    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise ImageInputError(f"{path} holds no .png files")
    pixels = []
    for file in files:
        try:
            with Image.open(file) as image:
                if image.mode not in ("1", "L"):
                    raise ImageInputError(
                        f"{file} is a {image.mode} image: give single-channel (mode 1 or L) 64×64 PNGs"
                    )
                pixels.append(np.asarray(image, dtype=np.uint8))
        except OSError as error:
            raise ImageInputError(f"{file} is not a readable PNG image ({error})") from None
    shapes = {p.shape for p in pixels}
    if len(shapes) > 1:
        raise ImageInputError(f"{path}: the PNGs differ in size ({sorted(shapes)}); all must be 64×64")
    return np.stack(pixels), [p.name for p in files]


def binary_images(pixels: np.ndarray, source: str) -> np.ndarray:
    """``pixels`` as float32 0/1 images ``(n, 64, 64)``, binarised explicitly; refuses the rest."""
    if pixels.ndim == 4 and pixels.shape[1] == 1:
        pixels = pixels[:, 0]
    if pixels.ndim != 3 or pixels.shape[1:] != (64, 64):
        raise ImageInputError(
            f"{source}: expected 64×64 single-channel images, (n, 64, 64) or (n, 1, 64, 64); "
            f"got shape {pixels.shape}"
        )
    if pixels.dtype.kind not in "biuf":
        raise ImageInputError(f"{source}: pixels of type {pixels.dtype} are not numbers")
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise ImageInputError(f"{source}: some pixels are NaN or infinite")
    found = np.unique(pixels)
    if set(found.tolist()) <= {0, 1}:
        on = 1
    elif set(found.tolist()) <= {0, 255}:
        on = 255
    else:
        examples = ", ".join(f"{value:g}" for value in found[:6])
        raise ImageInputError(
            f"{source}: pixels must be binary, 0/1 (dSprites' own) or 0/255; found {len(found)} "
            f"distinct values ({examples}{', …' if len(found) > 6 else ''}). Threshold them first, "
            "e.g. images > 127."
        )
    return (pixels == on).astype(np.float32)


def encode(model: BetaVAE, images: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances of binary ``(n, 64, 64)`` images, on the CPU.

    ``images`` go through :func:`binary_images` first: NaN, gray levels or a wrong shape are
    refused rather than encoded into numbers that look valid.
    """
    binary = binary_images(np.asarray(images), "images")
    return torch_encoder(model, torch.device("cpu"), batch_size)(binary)


def encode_file(reference: str, images_path: str | os.PathLike, out_path: str | os.PathLike) -> int:
    """``bvae encode``: the images' latents into an npz (``latents_mean``, ``latents_logvar``,
    ``names``), written atomically; returns the number of images. The images are read and
    checked before the model is loaded."""
    images, names = read_images(images_path)
    mean, logvar = encode(load(reference), images)
    with atomic_path(out_path) as temporary, open(temporary, "wb") as stream:
        np.savez(stream, latents_mean=mean, latents_logvar=logvar, names=np.array(names))
    return len(images)


def traverse(reference: str, shards: Path, config, out_dir: Path, *, force: bool = False) -> dict:
    """``bvae traverse MODEL --out DIR``: the traverse stage's reports for any model (a pulled
    folder, a ``model.pt`` or ``models:/NAME@ALIAS``), with its latent table, in ``out_dir``."""
    from bvae.data.ground_truth import DSprites
    from bvae.stages.traverse import render_reports
    from bvae.traversal import latent_table_markdown

    check_output_folder(out_dir, force=force)  # before the model and the data load
    data = DSprites.from_shards(shards)
    with atomic_path(out_dir, directory=True, force=force) as staging:
        report = render_reports(load(reference), data, config, staging)
        write_json(staging / "latents.json", report)
        (staging / "latents.md").write_text(latent_table_markdown(report["latents"], config.entangled_share))
    return report
