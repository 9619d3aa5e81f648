"""``params.yaml``, loaded once into frozen, typed config objects and validated at the edge.

Every section rejects unknown keys (with a did-you-mean) and impossible values; the error
names the key, the bad value and what to do. ``params.yaml`` is the only home of
hyper-parameters: DVC tracks each stage's keys, ``dvc exp run -S key=value`` varies them.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from bvae.data.official import OFFICIAL_MD5, OFFICIAL_URLS
from bvae.errors import BadInput
from bvae.report_keys import figure_keys


class ParamsError(BadInput, ValueError):
    """``params.yaml`` is missing, malformed, or holds a bad key or value."""


def _switch_from_yaml(value: Any) -> Any:
    """YAML reads an unquoted ``on`` / ``off`` (also ``-S key=on``) as true / false."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


# An auto | on | off setting, written quoted or not.
Switch = Annotated[Literal["auto", "on", "off"], BeforeValidator(_switch_from_yaml)]

# NaN or infinity is never a meaningful setting: it would train or score silently wrong.
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, **_STRICT)


# The model, objective and train sections are pydantic dataclasses: the core (models,
# objectives, training) takes them as plain frozen dataclasses (``dataclasses.asdict`` works,
# and checkpoints store them as dicts), and they validate wherever they are built.
@dataclass(frozen=True, config=_STRICT)
class ModelConfig:
    """The architecture; saved inside every checkpoint and model file."""

    architecture: Literal["conv", "mlp"] = "conv"
    latent_dim: int = Field(10, ge=1, le=512)
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    # The initial weights are part of the method (bvae.models.initialise): kaiming is
    # 1Konny/Beta-VAE's, glorot disentanglement_lib's, pytorch every bvae model before 2026-12.
    init: Literal["kaiming", "glorot", "pytorch"] = "kaiming"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True, config=_STRICT)
class ObjectiveConfig:
    """The loss (bvae.objectives): β-VAE (Higgins et al. 2017), capacity (Burgess et al. 2018),
    β-TCVAE (Chen et al. 2018), DIP-VAE-I / II (Kumar et al. 2018), FactorVAE (Kim & Mnih 2018)."""

    kind: Literal["beta", "capacity", "beta_tc", "dip_i", "dip_ii", "factor"] = "beta"
    beta: float = Field(4.0, ge=0)  # beta: on the KL; beta_tc: on the total correlation
    gamma: float = Field(1000.0, ge=0)  # capacity: on |KL − C|; factor: on the discriminator's TC
    capacity_max_nats: float = Field(25.0, ge=0)
    capacity_steps: int = Field(100_000, ge=1)
    gaussian_std: float = Field(0.1, gt=0)  # fixed decoder std of the Gaussian likelihood (pixels in [0, 1])
    tc_estimator: Literal["mws", "mss"] = "mws"  # beta_tc: minibatch weighted / stratified sampling
    lambda_od: float = Field(10.0, ge=0)  # DIP: weight of the off-diagonal covariance penalty
    lambda_d: float | None = Field(
        None, ge=0
    )  # DIP: of the diagonal's; None: dlib's (10·λ_od for I, λ_od for II)
    # FactorVAE's discriminator (bvae.models.Discriminator): disentanglement_lib's is 6 × 1000
    # units, trained by its own Adam at 1e-4 with β1 0.5, β2 0.9.
    discriminator_learning_rate: float = Field(1e-4, gt=0, lt=1)
    discriminator_units: int = Field(1000, ge=1, le=65536)
    discriminator_layers: int = Field(6, ge=1, le=64)

    def dip_lambda_d(self) -> float:
        """λ_d as trained: the setting, or disentanglement_lib's default for the DIP kind."""
        return self.lambda_d if self.lambda_d is not None else dlib_lambda_d(self.kind, self.lambda_od)


def dlib_lambda_d(kind: str, lambda_od: float) -> float:
    """disentanglement_lib's λ_d: 10·λ_od for DIP-VAE-I, λ_od for DIP-VAE-II."""
    return (10.0 if kind == "dip_i" else 1.0) * lambda_od


# The settings each objective kind reads (the rest of ObjectiveConfig it ignores): what a
# model's page, its registry tags and a comparison show beside its kind.
OBJECTIVE_SETTINGS: dict[str, tuple[str, ...]] = {
    "beta": ("beta",),
    "capacity": ("gamma", "capacity_max_nats", "capacity_steps"),
    "beta_tc": ("beta", "tc_estimator"),
    "dip_i": ("lambda_od", "lambda_d"),
    "dip_ii": ("lambda_od", "lambda_d"),
    "factor": ("gamma", "discriminator_learning_rate", "discriminator_units", "discriminator_layers"),
}


# What each kind adds to its curves (bvae.objectives): the terms its regulariser is made of.
KIND_TERMS: dict[str, tuple[str, ...]] = {
    "beta": (),
    "capacity": (),
    "beta_tc": ("mutual_information", "total_correlation", "dimwise_kl"),
    "dip_i": ("dip_off_diagonal", "dip_diagonal"),
    "dip_ii": ("dip_off_diagonal", "dip_diagonal"),
    "factor": ("discriminator_tc", "discriminator_loss", "discriminator_accuracy"),
}


def strength_setting(kind: str) -> str:
    """The setting a study varies for ``kind``, its regularisation strength: β for β-VAE and
    β-TCVAE, γ for the capacity objective and FactorVAE, λ_od for DIP-VAE (the first of its
    settings)."""
    return OBJECTIVE_SETTINGS[kind][0]


def objective_settings(objective: dict) -> dict[str, object]:
    """The settings ``objective`` (a dict of ObjectiveConfig's fields) is trained with; a DIP
    λ_d left to its default is given as trained."""
    settings = {key: objective[key] for key in OBJECTIVE_SETTINGS[objective["kind"]] if key in objective}
    if "lambda_d" in settings and settings["lambda_d"] is None:
        settings["lambda_d"] = dlib_lambda_d(objective["kind"], objective["lambda_od"])
    return settings


@dataclass(frozen=True, config=_STRICT)
class TrainConfig:
    """The training loop (bvae.training)."""

    steps: int = Field(3000, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(5e-4, gt=0, lt=1)  # Adam, as in Burgess et al. 2018
    seed: int = Field(0, ge=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    compile: Switch = "auto"  # auto: on for CUDA
    bf16: Switch = "auto"  # bf16 autocast; auto: on for CUDA with bf16
    # NHWC tensors for the conv model: +34 % steps/s on a 2-core CPU (BENCHMARKS.md).
    channels_last: Switch = "auto"  # auto: on for conv
    # One CUDA graph per step (forward, backward, Adam): the GPU no longer waits on Python's
    # kernel launches (bvae/cuda_graph.py). CUDA only; not under DDP.
    cuda_graphs: Switch = "auto"  # auto: on for CUDA, one process
    fused_adam: Switch = "auto"  # Adam's one-kernel update; auto: on when graphed
    threads: int = Field(0, ge=0)  # CPU threads for torch; 0: all cores
    nproc: int = Field(1, ge=1)  # data-parallel processes (DDP); `bvae train` relaunches under torchrun


class DataConfig(_Section):
    """Stage ``download``: where dSprites comes from."""

    source: Literal["auto", "official", "procedural"] = "auto"
    urls: tuple[str, ...] = OFFICIAL_URLS
    md5: str = OFFICIAL_MD5
    timeout_s: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0)

    @field_validator("urls")
    @classmethod
    def _urls_are_http(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        if not urls:
            raise ValueError("give at least one URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return urls

    @field_validator("md5")
    @classmethod
    def _md5_is_hex(cls, md5: str) -> str:
        if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5.lower()):
            raise ValueError(f"{md5!r} is not a 32-digit hex MD5")
        return md5.lower()


class ShardConfig(_Section):
    """Stage ``shard``: how the dataset is cut into HDF5 files."""

    images_per_shard: int = Field(65536, ge=1024, le=737280)
    compression: Literal["gzip", "lzf", "none"] = "gzip"
    compression_level: int = Field(1, ge=0, le=9)


class TrackingConfig(_Section):
    """MLflow: the experiment every pipeline run logs into."""

    experiment: str = Field("bvae-dsprites", min_length=1)


class EvaluateConfig(_Section):
    """Stage ``evaluate``: which metrics, at which sample sizes, on which representations."""

    sample_sizes: Literal["fast", "dlib", "smoke"] = "fast"
    seed: int = Field(0, ge=0)
    metrics: tuple[
        Literal["beta_vae", "factor_vae", "mig", "dci", "sap", "modularity", "unsupervised"], ...
    ] = (
        "beta_vae",
        "factor_vae",
        "mig",
        "dci",
        "sap",
        "modularity",
        "unsupervised",
    )
    dci_estimator: Literal["gbt", "forest"] = "gbt"
    representations: tuple[Literal["mean", "sampled"], ...] = ("mean", "sampled")
    baselines: tuple[Literal["ground_truth", "pca", "ica", "untrained"], ...] = (
        "ground_truth",
        "pca",
        "ica",
        "untrained",
    )
    baseline_fit_images: int = Field(10000, ge=100)
    heldout_images: int = Field(10000, ge=100, le=737280)
    encode_batch_size: int = Field(2048, ge=1)
    encode_all: Switch = "auto"  # auto: on for CUDA
    device: str = "auto"


class TraverseConfig(_Section):
    """Stage ``traverse``: latent traversals and the latent table."""

    mode: Literal["linear", "quantile"] = "linear"  # quantile: the range the encoder uses
    low: float = -3.0
    high: float = 3.0
    steps: int = Field(11, ge=2, le=64)
    extra_seeds: int = Field(1, ge=0, le=16)  # random seed images beside one per shape
    sample_images: int = Field(10000, ge=100, le=737280)  # for KL order and the latent table
    reconstructions: int = Field(10, ge=1, le=64)
    active_kl: float = Field(0.1, ge=0)  # nats; below it a latent is "inactive"
    # an active latent whose second factor has this share of its best factor's MI/H is
    # "entangled: best+second" in the latent table
    entangled_share: float = Field(0.5, gt=0, le=1)
    gif_frame_ms: int = Field(120, ge=10)
    seed: int = Field(0, ge=0)
    device: str = "auto"

    @field_validator("high")
    @classmethod
    def _high_above_low(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("low")
        if info.data.get("mode") == "linear" and low is not None and not low < high:
            raise ValueError(f"must be above traverse.low ({low}) for a linear traversal")
        return high


class RegisterConfig(_Section):
    """Stage ``register``: the registered model's name and its promotion gate."""

    model_name: str = Field("bvae-dsprites", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    selection_metric: str = "model.mean.factor_vae.eval_accuracy"  # a key of reports/metrics.json
    margin: float = Field(0.0, ge=0)  # promote only when beating the champion by more than this
    promote: bool = True  # run the champion gate here; sweeps set false and gate only their best


# Selection metrics a sweep computes across its members (bvae.stages.sweep_compare), needing
# no labels; a single run has none.
LABEL_FREE_SELECTIONS = ("udr.lasso", "udr.spearman")

# What the members of one ensemble may differ in: nothing that changes tensor shapes or the loop.
MEMBER_KEYS = (
    "objective.kind",
    "objective.beta",
    "objective.gamma",
    "objective.capacity_max_nats",
    "objective.capacity_steps",
    "objective.gaussian_std",
    "objective.tc_estimator",
    "objective.lambda_od",
    "objective.lambda_d",
    "objective.discriminator_learning_rate",
    "train.learning_rate",
    "train.seed",
)


GridSpec = dict[str, tuple[float | int | str, ...]]


class SweepConfig(_Section):
    """``sweeps/dvc.yaml``: a grid of members trained together as one ensemble (bvae.training)."""

    # Each key a params key members may differ in, each value its list; the members are the
    # Cartesian product, each on top of the other sections. A list of such grids: the members
    # of each, together (a study: each method with its own strengths, bvae.sweep.expand_grid).
    grid: GridSpec | tuple[GridSpec, ...] = {"objective.beta": (1.0, 4.0), "train.seed": (0, 1)}
    # loop: each member's own kernels in turn (bit-identical to single runs; the faster on a
    # CPU). vmap / bmm: one kernel per layer for all members on their stacked weights (grouped
    # convolutions / im2col and batched matrix products: bvae.runtime). auto: vmap on CUDA, else loop.
    mechanism: Literal["auto", "vmap", "bmm", "loop"] = "auto"
    workers: int = Field(2, ge=0, le=256)  # members evaluated at once (processes); 0: one per core

    @field_validator("grid")
    @classmethod
    def _grid_keys_share_an_ensemble(cls, grid: dict | tuple) -> dict | tuple:
        if not grid:
            raise ValueError("give at least one key with a list of values (or a list of such grids)")
        for part in grid if isinstance(grid, tuple) else (grid,):
            cls._check_grid(part)
        return grid

    @staticmethod
    def _check_grid(grid: dict) -> None:
        if not grid:
            raise ValueError("give at least one key with a list of values")
        for key, values in grid.items():
            if key not in MEMBER_KEYS:
                raise ValueError(
                    f"{key!r} cannot vary inside one ensemble (members share tensor shapes and the "
                    f"loop); vary one of {', '.join(MEMBER_KEYS)} here, and sweep other keys with "
                    "the Prefect flow `python -m flows.sweep`, which trains one ensemble per group"
                )
            if not values:
                raise ValueError(f"{key} needs a non-empty list of values")
            if len(set(values)) != len(values):
                raise ValueError(f"{key} lists a value twice: {list(values)}")


class Params(_Section):
    """All of ``params.yaml``. ``registry.selection_metric`` is checked against the figures
    the evaluate section will produce, so the gate's metric cannot be missing after hours of
    training."""

    data: DataConfig = DataConfig()
    shard: ShardConfig = ShardConfig()
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    traverse: TraverseConfig = TraverseConfig()
    registry: RegisterConfig = RegisterConfig()
    sweep: SweepConfig = SweepConfig()

    @model_validator(mode="after")
    def _selection_metric_is_computed(self) -> Params:
        keys = figure_keys(self.evaluate.metrics, self.evaluate.representations, self.evaluate.baselines)
        if self.registry.selection_metric not in keys | set(LABEL_FREE_SELECTIONS):
            examples = ", ".join(sorted(key for key in keys if key.startswith("model."))[:4])
            raise ValueError(
                f"registry.selection_metric {self.registry.selection_metric!r} will not be in "
                f"reports/metrics.json with evaluate.metrics {list(self.evaluate.metrics)} and "
                f"evaluate.representations {list(self.evaluate.representations)}: name one of "
                f"{examples}, … or add its metric to evaluate.metrics"
            )
        return self


def _suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(allowed)})"


def _field_types(section: Any) -> dict[str, Any]:
    if isinstance(section, type) and issubclass(section, BaseModel):
        return {name: field.annotation for name, field in section.model_fields.items()}
    if dataclasses.is_dataclass(section):
        return {field.name: field.type for field in dataclasses.fields(section)}
    return {}


def _keys_beside(location: tuple[Any, ...]) -> list[str]:
    """The valid keys of the section that holds ``location``'s last key."""
    section: Any = Params
    for part in location[:-1]:
        section = _field_types(section).get(part)
    return list(_field_types(section)) if section is not None else []


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        location = tuple(item["loc"])
        key = ".".join(str(part) for part in location)
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            allowed = _keys_beside(location)
            lines.append(f"  {key}: unknown key{_suggest(str(location[-1]), allowed)}")
            continue
        message, value = item["msg"].removeprefix("Value error, "), item.get("input")
        if not location:  # a check across sections (Params' own validator) names its keys
            lines.append(f"  {message}")
            continue
        lines.append(f"  {key} = {value!r}: {message}")
    return (
        f"{source} is invalid:\n" + "\n".join(lines) + f"\nFix these keys in {source} "
        "(or in the `dvc exp run -S` overrides) and run again."
    )


def params_from_mapping(mapping: Any, source: str = "params.yaml") -> Params:
    """Validate a parsed ``params.yaml`` mapping."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ParamsError(f"{source} must hold a mapping of sections, got {type(mapping).__name__}")
    try:
        return Params.model_validate(mapping)
    except ValidationError as error:
        raise ParamsError(_describe(error, source)) from None


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; a clear error if it is missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from the repository root or pass --params PATH.")
    if not path.is_file():
        raise ParamsError(f"{path} is a folder, not a params file: pass --params PATH/params.yaml.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ParamsError(f"{path} is not a text file (not UTF-8): pass a params.yaml.") from None
    try:
        mapping = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}") from None
    if mapping is None:  # an empty file would silently mean every code default
        raise ParamsError(
            f"{path} is empty: bvae does not guess the params. Restore it (`git checkout {path}`) "
            "or write the sections you mean to set."
        )
    return params_from_mapping(mapping, str(path))
