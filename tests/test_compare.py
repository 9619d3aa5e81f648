"""`bvae compare`'s rows from DVC's and the registry's records (the commands themselves run in
test_pipeline and test_registry), and what DVC's own tables read in a fresh clone."""

from __future__ import annotations

import json
from types import SimpleNamespace

from bvae.compare import EXPERIMENT_COLUMNS, experiment_rows, settings_label, version_rows
from bvae.tables import MISSING, text_table
from tests.helpers import copy_repository, run


def test_each_objective_shows_only_its_own_settings():
    settings = {"beta": 4.0, "gamma": 1000.0, "capacity_max_nats": 25.0, "capacity_steps": 100000}
    assert settings_label("beta", settings) == "β 4"
    assert settings_label("capacity", settings) == "γ 1000, C 25, over 100,000"
    assert (
        settings_label("capacity", {"gamma": "1000.0", "capacity_max_nats": "25.0"}) == "γ 1000, C 25, over –"
    )


def test_an_experiment_row_keeps_counts_whole_and_marks_what_did_not_run():
    dvc_row = {"Experiment": "tiny", "rev": "abc", "objective.kind": "beta", "objective.beta": 4.0}
    dvc_row |= {"train.seed": 1.0, "train.steps": 2000.0, "active_latents": 3.0, "collapsed": "False"}
    (row,) = experiment_rows([dvc_row])
    assert len(row) == 1 + len(EXPERIMENT_COLUMNS)
    assert row[:5] == ["tiny", "beta", "β 4", 1, 2000] and row[7] == 3 and row[-1] == "no"
    assert row[5] is None and row[8] is None  # no evaluate yet: shown as –
    assert experiment_rows([{"rev": "workspace"}])[0][0] == "workspace"


def test_figures_dvc_could_not_read_are_missing_and_named_under_the_table():
    """DVC writes "!" for a commit's figures when their files are not in this clone's cache
    (a fresh clone after `dvc repro`: the commit's own outputs were never pulled)."""
    from bvae.compare import unread_note

    shown = [
        {"rev": "workspace", "objective.kind": "beta", "heldout.kl_nats": 12.3, "collapsed": False},
        {"rev": "main", "objective.kind": "beta", "heldout.kl_nats": "!", "collapsed": "!"},
    ]
    workspace, main = experiment_rows(shown)
    assert workspace[6] == 12.3 and workspace[-1] == "no"
    assert main[6] is None and main[-1] is None  # –, not "!" or a made-up "no"
    note = unread_note(shown)
    assert note.startswith("main: ") and "dvc pull" in note
    assert unread_note(shown[:1]) is None


def test_a_version_row_reads_the_registry_tags():
    tags = {"objective": "beta", "beta": "4.0", "train.seed": "2", "train.steps": "20", "collapsed": "true"}
    tags |= {"metric.factor_vae": "0.5", "metric.mig": "0.125"}
    (row,) = version_rows([(SimpleNamespace(version=3, tags=tags), ["candidate", "champion"])])
    assert row == ["v3 @candidate @champion", "beta", "β 4", 2, 20, 0.5, None, 0.125, None, "yes"]


def test_the_text_table_aligns_numbers_right_and_text_left():
    table = text_table(["name", "score"], [["a", 0.5], ["longer", None], ["b", 12.25]]).splitlines()
    assert table == [
        "name    score",
        "------  -----",
        "a         0.5",
        f"longer      {MISSING}",
        "b       12.25",
    ]


def test_sweep_members_come_from_each_experiments_comparison():
    """DVC gives every row every column any row has, "None" where it has no value: a member of
    another experiment's sweep is left out, and a missing figure is –."""
    from bvae.compare import MEMBER_COLUMNS, member_rows

    first = {"Experiment": "study", "members.dip_i-od10.method": "dip_i", "members.dip_i-od10.strength": 10.0}
    first |= {
        "members.dip_i-od10.udr.lasso": 0.5,
        "members.beta4.method": "None",
        "members.beta4.strength": "None",
    }
    second = {"rev": "main", "members.dip_i-od10.method": "None", "members.beta4.method": "beta"}
    rows = member_rows([first, second])
    assert [row[0] for row in rows] == ["study/dip_i-od10", "main/beta4"]
    assert len(rows[0]) == 1 + len(MEMBER_COLUMNS) and rows[0][1:3] == ["dip_i", 10.0] and rows[0][-1] == 0.5
    assert rows[1][1] == "beta" and rows[1][2] is None


def test_a_clone_where_the_sweep_never_ran_reads_its_committed_comparison(tmp_path):
    """What ``git clone`` gives, before any run or pull: the sweep's comparison is a committed
    record (``cache: false``), so DVC's tables read it, and the only files DVC fails to load are
    the main pipeline's, which ``dvc repro`` or ``dvc pull`` writes. Before, the sweep's was one
    of them, and stayed one after ``dvc repro`` (a pipeline that never ran here)."""
    clone = copy_repository(tmp_path / "clone", as_cloned=True)
    shown = run(["dvc", "metrics", "show", "--json"], clone).stdout
    files = json.loads(shown)[""]["data"]
    failed = {name for name, record in files.items() if "error" in record}
    assert failed == {"reports/train/summary.json", "reports/metrics.json"}
    comparison = files["sweeps/comparison.json"]["data"]
    assert comparison and comparison == json.loads((clone / "sweeps/comparison.json").read_text())
    header = run(["dvc", "exp", "show", "--no-pager", "--csv"], clone).stdout.splitlines()[0].split(",")
    assert {f"members.{name}.train.seed" for name in comparison["members"]} <= set(header)
