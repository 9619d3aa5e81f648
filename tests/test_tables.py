"""One number format and one Markdown table for every table bvae writes."""

from __future__ import annotations

import math

from bvae.stages.sweep_compare import comparison_markdown
from bvae.tables import MISSING, markdown_table, number
from flows.report import sweep_markdown


def test_numbers_read_the_same_everywhere():
    assert number(300000) == "300,000"
    assert number(0.123456) == "0.1235" and number(35.61234) == "35.61" and number(0.0) == "0"
    assert number(0.000123) == "1.23e-04"  # four significant digits would print 0.000123
    assert number(None) == number(math.nan) == MISSING == "–"
    assert number(True) == "True" and number("posX") == "posX"


def test_a_markdown_table_keeps_text_cells_and_formats_numbers():
    table = markdown_table(["latent", "KL (nats)", "MI"], [["z0", "3.20", 0.123456], ["z1", "0.01", None]])
    assert table.splitlines() == [
        "| latent | KL (nats) | MI |",
        "|---|---|---|",
        "| z0 | 3.20 | 0.1235 |",
        f"| z1 | 0.01 | {MISSING} |",
    ]


def test_a_missing_figure_is_the_same_dash_in_the_sweep_and_the_flow_tables():
    rows = [
        {
            "member": "beta1",
            "objective.beta": 1.0,
            "model.mean.mig.discrete_mig": 0.2,
            "train.active_latents": 3,
        },
        {
            "member": "beta4",
            "objective.beta": 4.0,
            "model.mean.mig.discrete_mig": None,
            "train.active_latents": 0,
        },
    ]
    compared = comparison_markdown(rows, "model.mean.mig.discrete_mig", "beta1")
    assert "| beta1 ★ | 1 | 0.2 | 3 |" in compared and f"| beta4 | 4 | {MISSING} | 0 |" in compared
    flow_rows = [{"experiment": "s-0", "objective.beta": 4.0, "version": None, "status": "failed"}]
    shown = sweep_markdown("s", flow_rows, ["objective.beta"], "mig", None, None, "http://ui")
    assert f"| `s-0` | 4 | {MISSING} | {MISSING} | {MISSING} | {MISSING} | failed |" in shown
    assert "None" not in compared + shown


def test_the_sweep_pipeline_and_the_flow_compare_points_with_one_function():
    from bvae.sweep import best_member, comparison_rows

    selection = "model.mean.mig.discrete_mig"
    points = [
        ("a", {"train.seed": 0}, {selection: 0.2, "heldout.kl_nats": 3.0, "seconds.mig": 1.0}),
        ("b", {"train.seed": 1}, {}),  # a failed point: its figures are missing, not dropped
    ]
    rows = comparison_rows(points, selection, name_column="experiment")
    assert rows == [
        {"experiment": "a", "train.seed": 0, selection: 0.2, "heldout.kl_nats": 3.0},
        {"experiment": "b", "train.seed": 1, selection: None, "heldout.kl_nats": None},
    ]
    assert best_member(rows, selection)["experiment"] == "a"
