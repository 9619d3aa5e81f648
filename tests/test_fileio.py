"""Output folders: bvae replaces only what it wrote, whole, and never a user's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from bvae.cli import main
from bvae.errors import EXIT_BAD_INPUT
from bvae.fileio import OUTPUT_MARKER, OutputFolderError, atomic_path


def user_files(folder: Path) -> dict[str, bytes]:
    """A folder of someone's files, hidden ones and a sub-folder included; returns its contents."""
    (folder / "notes").mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / ".env").write_text("SECRET=1")
    (folder / "notes" / "todo.md").write_text("- everything")
    return snapshot(folder)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_folder(path: Path, name: str, **options) -> None:
    with atomic_path(path, directory=True, **options) as staging:
        (staging / name).write_text(name)


def test_a_new_folder_gets_the_marker_and_a_marked_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "out"
    write_folder(out, "first.png")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "first.png"]
    write_folder(out, "second.png")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "second.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing left aside


def test_an_empty_folder_is_used_and_a_users_folder_is_refused_untouched(tmp_path):
    (tmp_path / "empty").mkdir()
    write_folder(tmp_path / "empty", "a.png")
    assert (tmp_path / "empty" / "a.png").exists()
    before = user_files(tmp_path / "mine")
    with pytest.raises(OutputFolderError, match=r"mine already holds files that bvae did not write.*--force"):
        write_folder(tmp_path / "mine", "a.png")
    assert snapshot(tmp_path / "mine") == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="is not a folder"):
        write_folder(tmp_path / "file", "a.png")
    write_folder(tmp_path / "mine", "a.png", force=True)  # asked for explicitly
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [OUTPUT_MARKER, "a.png"]


def test_a_failure_midway_leaves_the_old_folder_whole(tmp_path):
    out = tmp_path / "out"
    write_folder(out, "old.png")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(out, directory=True) as staging:
        (staging / "new.png").write_text("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "old.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("where", [".", "..", "home", "/"])
def test_the_working_directory_its_parents_home_and_root_are_refused_even_with_force(
    tmp_path, monkeypatch, where
):
    work = tmp_path / "home" / "work"
    before = user_files(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(work)
    target = {"home": str(tmp_path / "home")}.get(where, where)
    with pytest.raises(OutputFolderError, match="refusing to use .* as an output folder"):
        write_folder(Path(target), "a.png", force=True)
    assert snapshot(work) == before


@pytest.mark.parametrize(
    "command",
    [
        ["pull", "bvae-dsprites@champion"],
        ["traverse", "models/model.pt"],
        ["shard"],
    ],
)
@pytest.mark.parametrize("out", [".", "..", "mine"])
def test_commands_refuse_a_users_folder_before_doing_anything(tmp_path, monkeypatch, capsys, command, out):
    """`--out .` once emptied the working directory; now nothing is touched or contacted."""
    work = tmp_path / "work"
    user_files(work)
    user_files(work / "mine")
    before = snapshot(tmp_path)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # never reached
    assert main([*command, "--out", out]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and ("as an output folder" in error or "did not write" in error)
    assert snapshot(tmp_path) == before


def test_what_a_killed_write_left_behind_is_removed_by_the_next_write(tmp_path):
    """`kill -9` midway through `download` or `shard` left temporaries that stayed forever."""
    import subprocess
    import sys

    out = tmp_path / "dsprites.npz"
    code = (
        "import os, sys\n"
        "from bvae.fileio import atomic_path\n"
        "with atomic_path(sys.argv[1]) as temporary:\n"
        "    temporary.write_bytes(b'x' * 1000)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(out)], check=False)
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".dsprites.npz.bvae-") and left.suffix == ".tmp"
    with atomic_path(tmp_path / "other.npz"):  # another output's write leaves it alone
        assert left.exists()
    with atomic_path(out) as temporary:  # a write of the same output: while it runs, its own
        temporary.write_bytes(b"new")  # temporary stays, the dead one is gone
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["other.npz", temporary.name])
    assert out.read_bytes() == b"new"


def test_outputs_get_the_modes_of_the_umask(tmp_path):
    """mkstemp's 0600 once reached every output: others could not read a shared project."""
    import os

    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "file.json") as temporary:
            temporary.write_text("{}")
        write_folder(tmp_path / "folder", "a.png")
    finally:
        os.umask(previous)
    assert (tmp_path / "file.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755


def test_a_folder_dvc_restored_is_bvaes_to_replace(tmp_path):
    """``dvc checkout`` restores an output folder without the marker (``.dvcignore`` keeps it
    out of the hash): a folder a ``dvc.lock`` (or a ``.dvc`` file) names as an output may be
    replaced; an untracked one beside it may not."""
    from bvae.fileio import check_output_folder

    (tmp_path / ".dvc").mkdir()
    (tmp_path / "sweeps").mkdir()
    lock = "schema: '2.0'\nstages:\n  traverse:\n    outs:\n    - path: reports/traversals\n"
    (tmp_path / "dvc.lock").write_text(lock)
    (tmp_path / "sweeps/dvc.lock").write_text("stages:\n  sweep-evaluate:\n    outs:\n    - path: members\n")
    for restored in ("reports/traversals", "sweeps/members", "results/recipes"):
        (tmp_path / restored).mkdir(parents=True)
        (tmp_path / restored / "grid.png").write_bytes(b"png")
    (tmp_path / "results/recipes.dvc").write_text("outs:\n- path: recipes\n")
    for restored in ("reports/traversals", "sweeps/members", "results/recipes"):
        check_output_folder(tmp_path / restored)
    user_files(tmp_path / "reports/mine")
    with pytest.raises(OutputFolderError, match="did not write"):
        check_output_folder(tmp_path / "reports/mine")


def test_an_output_folder_that_cannot_be_written_fails_before_any_work(tmp_path):
    from bvae.fileio import NotWritable, check_writable

    (tmp_path / "models").write_text("a file where the folder should be")
    with pytest.raises(NotWritable, match=r"cannot write to .*models/"):
        check_writable([tmp_path / "reports/train", tmp_path / "models"])
    assert (tmp_path / "reports/train").is_dir() and not list((tmp_path / "reports/train").iterdir())
