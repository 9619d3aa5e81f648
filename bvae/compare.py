"""``bvae compare``: experiments, or a model's registered versions, in one table a terminal shows.

``dvc exp show`` puts every param and every figure of every metrics file in a column (over 300
here), so at 160 columns each cell is ``…``, and it knows nothing of the registry. This reads
the same data (``dvc.api.exp_show``: the workspace, its commit and that commit's experiments;
or the registry's versions and their tags) and keeps what a model is compared by: what was
trained (objective, its settings, seed, steps) and how it did (held-out reconstruction and KL,
active latents, four disentanglement scores, the collapse flag). A figure a row lacks (a stage
that has not run, outputs this clone's DVC cache does not hold, a version registered before the
figure existed) is ``–``; a note under the table names the rows whose outputs were not there.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping

from bvae.config import OBJECTIVE_SETTINGS, dlib_lambda_d
from bvae.report_keys import HEADLINE, HEADLINE_LABELS
from bvae.tables import markdown_table, number, text_table

SYMBOLS = {
    "beta": "β",
    "gamma": "γ",
    "capacity_max_nats": "C",
    "capacity_steps": "over",
    "tc_estimator": "TC by",
    "lambda_od": "λod",
    "lambda_d": "λd",
    "discriminator_learning_rate": "D lr",
    "discriminator_units": "D width",
    "discriminator_layers": "D depth",
}
# column: name in report_keys.HEADLINE (the registry tags it as metric.<name>)
SCORES = {label: name for name, label in HEADLINE_LABELS.items()}
TRAINED = ("objective", "settings", "seed", "steps")
EXPERIMENT_COLUMNS = (*TRAINED, "rec nats", "KL nats", "active", *SCORES, "collapsed")
VERSION_COLUMNS = (*TRAINED, *SCORES, "collapsed")  # the registry's tags hold no held-out figures
# A sweep member's figures in sweeps/comparison.json (no collapse flag; its UDR instead).
MEMBER_COLUMNS = ("method", "strength", "seed", "rec nats", "KL nats", "active", *SCORES, "UDR")
SWEEP_NOTE = (
    "sweep experiments: `bvae compare --sweep` shows their members (the rows above are the main pipeline's)"
)
UNREAD = "!"  # what dvc.api.exp_show writes for a figure whose file this clone's DVC cache lacks


def settings_label(kind: object, settings: Mapping[str, object]) -> str:
    """``β 4`` or ``γ 1000, C 25 over 100,000``: an objective's own settings, short."""
    keys = OBJECTIVE_SETTINGS.get(str(kind), ())
    values = {key: _as_number(settings.get(key)) for key in keys}
    if values.get("lambda_d") is None and isinstance(values.get("lambda_od"), int | float):
        values["lambda_d"] = dlib_lambda_d(str(kind), values["lambda_od"])
    return ", ".join(f"{SYMBOLS[key]} {number(values[key])}" for key in keys)


def _as_number(value: object) -> object:
    """Registry tags are text: ``"4.0"`` back to 4.0 (and ``"100000"`` to 100000)."""
    if isinstance(value, str):
        try:
            return int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            return value
    return value


def _shown(row: Mapping[str, object]) -> dict[str, object]:
    """A ``dvc.api.exp_show`` row with its missing figures as ``None``: DVC gives every row
    every column any row has, and writes ``"None"`` where this one has no value and ``"!"``
    where it could not read the file (a commit's outputs this clone never pulled)."""
    return {key: None if value in ("None", UNREAD) else value for key, value in row.items()}


def unread_note(rows: Iterable[Mapping[str, object]]) -> str | None:
    """The rows whose figures DVC could not read, and how to get them."""
    names = [str(row.get("Experiment") or row.get("rev")) for row in rows if UNREAD in row.values()]
    if not names:
        return None
    text = f"{', '.join(names)}: – where this clone's DVC cache lacks the outputs (`dvc pull` fetches them)"
    return textwrap.fill(text, 100)  # a terminal's width, as the table


def _count(value: object) -> object:
    """DVC reads every number of params.yaml and the metrics as a float: 2000.0 back to 2000."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _flag(value: object) -> str | None:
    if value is None:
        return None
    return "yes" if str(value).lower() == "true" else "no"


def experiment_rows(rows: Iterable[Mapping[str, object]]) -> list[list[object]]:
    """A row per ``dvc.api.exp_show`` row: its name, then :data:`EXPERIMENT_COLUMNS`."""
    table = []
    for row in map(_shown, rows):
        kind = row.get("objective.kind")
        settings = {key: row.get(f"objective.{key}") for keys in OBJECTIVE_SETTINGS.values() for key in keys}
        table.append(
            [
                row.get("Experiment") or row.get("rev"),
                kind,
                settings_label(kind, settings),
                _count(row.get("train.seed")),
                _count(row.get("train.steps")),
                row.get("heldout.reconstruction_nats"),
                row.get("heldout.kl_nats"),
                _count(row.get("active_latents")),
                *(row.get(HEADLINE[name]) for name in SCORES.values()),
                _flag(row.get("collapsed")),
            ]
        )
    return table


def member_rows(rows: Iterable[Mapping[str, object]]) -> list[list[object]]:
    """A row per sweep member of each ``dvc.api.exp_show`` row (its ``sweeps/comparison.json``,
    flattened by DVC as ``members.<member>.<figure>``): ``experiment/member``, then
    :data:`MEMBER_COLUMNS`."""
    table = []
    for row in map(_shown, rows):
        members: dict[str, dict[str, object]] = {}
        for key, value in row.items():
            if key.startswith("members."):
                name, _, figure = key.removeprefix("members.").partition(".")
                members.setdefault(name, {})[figure] = value
        experiment = row.get("Experiment") or row.get("rev")
        for name, figures in members.items():
            if all(value is None for value in figures.values()):
                continue  # a member of another experiment's sweep
            table.append(
                [
                    f"{experiment}/{name}",
                    figures.get("method"),
                    figures.get("strength"),
                    _count(figures.get("train.seed")),
                    figures.get("heldout.reconstruction_nats"),
                    figures.get("heldout.kl_nats"),
                    _count(figures.get("train.active_latents")),
                    *(figures.get(HEADLINE[score]) for score in SCORES.values()),
                    figures.get("udr.lasso"),
                ]
            )
    return table


def version_rows(versions: Iterable[tuple[object, list[str]]]) -> list[list[object]]:
    """A row per registered ``ModelVersion`` and its aliases, from its tags: its number and
    aliases, then :data:`VERSION_COLUMNS`."""
    table = []
    for version, aliases in versions:
        tags = dict(version.tags or {})
        table.append(
            [
                " ".join([f"v{version.version}", *(f"@{alias}" for alias in aliases)]),
                tags.get("objective"),
                settings_label(tags.get("objective"), tags),
                _as_number(tags.get("train.seed")),
                _as_number(tags.get("train.steps")),
                *(_as_number(tags.get(f"metric.{name}")) for name in SCORES.values()),
                _flag(tags.get("collapsed")),
            ]
        )
    return table


def render(header: list[str], rows: list[list[object]], markdown: bool = False) -> str:
    return markdown_table(header, rows) if markdown else text_table(header, rows)


def experiments_table(num: int = 1, markdown: bool = False, sweep: bool = False) -> str:
    """The workspace, its commit (and ``num - 1`` before it) and their DVC experiments; with
    ``sweep``, the sweep members each of them holds."""
    import dvc.api

    shown = dvc.api.exp_show(num=num)
    if sweep:
        table = render(["experiment/member", *MEMBER_COLUMNS], member_rows(shown), markdown)
        has_members = False  # the table is the members
    else:
        table = render(["experiment", *EXPERIMENT_COLUMNS], experiment_rows(shown), markdown)
        has_members = any(key.startswith("members.") for row in shown for key in row)
    notes = [unread_note(shown), SWEEP_NOTE if has_members else None]
    return "\n\n".join([table, *filter(None, notes)])


def versions_table(name: str, markdown: bool = False) -> str:
    from bvae.tracking import registry

    return render([name, *VERSION_COLUMNS], version_rows(registry.versions(name)), markdown)
