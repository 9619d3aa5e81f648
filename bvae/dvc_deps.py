"""Each DVC stage's code deps, generated from the import graph instead of kept by hand.

DVC must never serve a stale result: a stage's code deps are exactly the bvae modules its
entry module imports (the import closure, lazy imports included), so a change to code a stage
runs reruns it, and a change to code it does not run does not.

    python -m bvae.dvc_deps           # rewrite the bvae/ deps of dvc.yaml and sweeps/dvc.yaml
    python -m bvae.dvc_deps --check   # exit 1, naming the stages, if any is out of date

Only the ``- bvae/...`` lines of each stage's ``deps`` are rewritten (the rest of the file,
comments included, stays as it is). A folder dep (``bvae/metrics``) stays a folder while the
stage runs every module in it.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bvae"
PIPELINES = (ROOT / "dvc.yaml", ROOT / "sweeps" / "dvc.yaml")
# Stages whose code is not ``bvae.stages.<stage>``: the two training stages share one module.
ENTRY_MODULES = {"sweep-train": "bvae.stages.train"}

_STAGE = re.compile(r"^  ([\w-]+):\s*$")
_SECTION = re.compile(r"^    (\w+):")
_ITEM = re.compile(r"^      - (\S+?)\s*(#.*)?$")


def entry_module(stage: str) -> str:
    return ENTRY_MODULES.get(stage, f"bvae.stages.{stage.replace('-', '_')}")


def _module_file(dotted: str) -> Path | None:
    path = ROOT.joinpath(*dotted.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def _shipped_file(node: ast.AST) -> str | None:
    """The name in ``Path(__file__).with_name("<name>")``: a file shipped beside its user (the
    served model MLflow copies into every logged model, the report's template) is code the
    stage runs too."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "with_name"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ):
        return str(node.args[0].value)
    return None


def _imports(file: Path) -> tuple[set[str], set[Path]]:
    """The bvae modules ``file`` imports, and the files it reads from beside itself: anywhere
    in a module (a stage may call any of its functions), at the top level of a package's
    ``__init__.py`` (importing a package runs that, not its functions)."""
    found: set[str] = set()
    shipped: set[Path] = set()
    tree = ast.parse(file.read_text())
    nodes = tree.body if file.name == "__init__.py" else ast.walk(tree)
    package = ".".join(file.relative_to(ROOT).parent.parts)
    for node in nodes:
        if (name := _shipped_file(node)) is not None:
            if name.endswith(".py"):
                found.add(f"{package}.{name[:-3]}")
            elif file.with_name(name).is_file():
                shipped.add(file.with_name(name))
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "bvae"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bvae":
            found.add(node.module)
            # `from bvae import tracking` imports a module; `from bvae.x import name` may too
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found, shipped


def import_closure(entry: str) -> set[Path]:
    """Files of every bvae module ``entry`` imports, transitively, with their packages'
    ``__init__.py`` (Python runs those first) and the files they ship beside them."""
    seen: set[Path] = set()
    pending = [entry]
    while pending:
        parts = pending.pop().split(".")
        for depth in range(1, len(parts) + 1):
            file = _module_file(".".join(parts[:depth]))
            if file is not None and file not in seen:
                seen.add(file)
                modules, shipped = _imports(file)
                pending.extend(modules)
                seen |= shipped
    return seen


def code_deps(stage: str, folders: list[str]) -> list[str]:
    """The stage's bvae deps: ``folders`` it already lists that it runs all of, then files."""
    closure = import_closure(entry_module(stage))
    kept, covered = [], set()
    for folder in folders:
        modules = {
            path for path in (ROOT / folder).rglob("*") if path.is_file() and "__pycache__" not in path.parts
        }
        if modules and modules <= closure:
            kept.append(folder)
            covered |= modules
    files = sorted(str(f.relative_to(ROOT)) for f in closure - covered)
    return kept + files


def regenerate(text: str) -> str:
    """``text`` (a dvc.yaml) with every stage's bvae deps replaced by :func:`code_deps`."""
    lines, out = text.splitlines(keepends=True), []
    stage, section, pending = None, None, None  # pending: the deps block being collected
    for line in [*lines, ""]:
        if pending is not None and not _ITEM.match(line):
            others, folders = pending
            out.extend(f"      - {dep}\n" for dep in others + code_deps(stage, folders))
            pending = None
        if match := _STAGE.match(line):
            stage, section = match.group(1), None
        elif match := _SECTION.match(line):
            section = match.group(1)
            if section == "deps" and stage is not None:
                out.append(line)
                pending = ([], [])
                continue
        elif pending is not None and (item := _ITEM.match(line)):
            dep = item.group(1)
            if not dep.startswith("bvae/"):
                pending[0].append(line.strip()[2:])
            elif (ROOT / dep).is_dir():
                pending[1].append(dep)
            continue
        out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bvae.dvc_deps", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if out of date")
    args = parser.parse_args(argv)
    stale = []
    for pipeline in PIPELINES:
        text = pipeline.read_text()
        wanted = regenerate(text)
        if wanted != text:
            stale.append(str(pipeline.relative_to(ROOT)))
            if not args.check:
                pipeline.write_text(wanted)
    if args.check and stale:
        print(
            f"code deps out of date in {', '.join(stale)}: run `python -m bvae.dvc_deps`",
            file=sys.stderr,
        )
        return 1
    if stale:
        print(f"rewrote the code deps of {', '.join(stale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
