"""The README is a runnable tour and docs/ its reference: CI runs the very set-up and test
commands the README shows, and every `bvae` command the pages show exists."""

import re

import pytest

from tests.helpers import REPO_ROOT


def fenced_commands(markdown: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_set_up_and_test_commands():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci/run").read_text()
    set_up = 'python3 -m venv .venv && .venv/bin/pip install -c constraints/cpu.txt -e ".[dev]"'
    test = "source .venv/bin/activate && pytest"
    commands = fenced_commands(readme)
    assert set_up in commands and test in commands
    assert set_up in ci.splitlines() and test in ci.splitlines()


PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_bvae_subcommand_a_page_shows_exists(page):
    from bvae.cli import build_parser

    known = set(build_parser()._subparsers._group_actions[0].choices)
    used = {line.split()[1] for line in fenced_commands(page.read_text()) if line.startswith("bvae ")}
    assert used <= known, used - known


def test_every_page_the_readme_links_exists():
    links = re.findall(r"\]\(((?:docs/)?[A-Z\w-]+\.md)\)", (REPO_ROOT / "README.md").read_text())
    assert {"docs/pipeline.md", "docs/testing.md"} <= set(links)
    assert all((REPO_ROOT / link).exists() for link in links), links


def test_the_readme_switches_telemetry_off_for_the_servers_it_starts():
    """The README's own `mlflow server` / `prefect server start` commands are not bvae's: the
    README must give the shell line that turns their telemetry off, every switch bvae sets."""
    from bvae.telemetry import TELEMETRY_OFF

    exports = [
        line for line in fenced_commands((REPO_ROOT / "README.md").read_text()) if line.startswith("export ")
    ]
    assert any(
        all(f"{key}={value}" in line.split() for key, value in TELEMETRY_OFF.items()) for line in exports
    )
