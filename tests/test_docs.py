"""The README and the docs site against the code and CI (no mkdocs needed: `.ci/run` builds
the site with ``mkdocs build --strict``, which checks the links)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PACKAGES = ("sweeper", "trainers")
# The packages whose modules are imported by name (``from sweeper.study import record``).
FOLDERS = ("sweeper", "sweeper.engine", "sweeper.study", "sweeper.trial", "sweeper.views")


def _fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def _quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in _fenced_blocks(section, "bash")]


def test_the_readmes_second_quick_start_command_is_the_one_ci_runs() -> None:
    commands = _quick_start_commands()
    assert len(commands) == 2, commands
    assert commands[0] == "python3 -m pip install . && sweeper launch search_spaces/mnist_demo.yaml"
    ci = (REPO / ".ci" / "run").read_text().rstrip().splitlines()[-1]
    assert commands[1] == ci
    assert "mkdocs build --strict" in ci


def test_the_readme_fits_in_one_page() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 160, len(lines)


def test_every_module_is_named_in_the_architecture_page() -> None:
    page = (DOCS / "architecture.md").read_text()
    missing = [str(f.relative_to(REPO)) for package in PACKAGES for f in sorted((REPO / package).rglob("*.py"))
               if f.name != "__init__.py" and not re.search(rf"(?<![\w.]){re.escape(f.name)}(?!\w)", page)]
    assert not missing, f"not named in docs/architecture.md: {missing}"


def _nav_pages(nav: list[object]) -> list[str]:
    pages: list[str] = []
    for entry in nav:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            pages += _nav_pages(value) if isinstance(value, list) else [str(value)]
    return pages


def test_every_page_of_the_nav_exists() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    assert "index.md" in pages and "api.md" in pages
    assert [p for p in pages if not (DOCS / p).is_file()] == []
    assert sorted(pages) == sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))


def _unit(module: str) -> str:
    """A module as the architecture page's import table names it: ``sweeper.x`` as ``x`` and
    ``sweeper.engine.x`` as ``engine.x`` (so for each folder), the ``sweeper.spec`` package and its
    modules as ``spec``, ``trainers.x`` as is."""
    parts = module.split(".")
    if parts[:2] == ["sweeper", "spec"]:
        return "spec"
    if parts[0] == "sweeper" and len(parts) > 1:
        return ".".join(parts[1:])
    return module


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports() -> dict[str, set[str]]:
    """Each module's imports of sweeper and trainers modules, at the top or inside a function,
    leaving out those under ``if TYPE_CHECKING:``."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "_wandb_site" in path.parts:
                continue
            unit = _unit(_module_of(path))
            tree = ast.parse(path.read_text())
            typing_only = {id(n) for node in ast.walk(tree)
                           if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                           for n in ast.walk(node)}
            deps = graph.setdefault(unit, set())
            for node in ast.walk(tree):
                if id(node) in typing_only:
                    continue
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [f"{node.module}.{a.name}" if node.module in FOLDERS else node.module
                             for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                deps.update(_unit(n) for n in names if n.split(".")[0] in PACKAGES)
            deps.discard(unit)
    return graph


def test_the_architecture_pages_import_table_is_the_codes() -> None:
    page = (DOCS / "architecture.md").read_text()
    section = page.split("\n## Imports, module by module\n", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for row in re.findall(r"^\| `([\w.]+)` \| (.*) \|$", section, flags=re.M):
        table[row[0]] = set(re.findall(r"`([\w.]+)`", row[1]))
    code = _runtime_imports()
    stale = {m: {"in the table, not the code": sorted(table.get(m, set()) - code.get(m, set())),
                 "in the code, not the table": sorted(code.get(m, set()) - table.get(m, set()))}
             for m in sorted(set(table) | set(code)) if table.get(m, set()) != code.get(m, set())}
    assert not stale, f"docs/architecture.md's import table (and maybe its diagram) is stale: {stale}"


FOLDER_NAMES = ("spec", "study", "engine", "trial", "views", "trainers")


def _folder(unit: str) -> str | None:
    """The diagram's box of an import-table unit: a folder, ``front ends`` for the top-level
    modules, ``None`` for what the diagram leaves out (errors, defaults, the package itself)."""
    if unit in ("errors", "defaults", "sweeper"):
        return None
    head = unit.split(".")[0]
    return head if head in FOLDER_NAMES else "front ends"


def test_the_architecture_diagrams_folder_arrows_are_the_codes() -> None:
    page = (DOCS / "architecture.md").read_text()
    diagram = page.split("\n## Layout\n", 1)[1].split("```\n", 2)[1]
    drawn: dict[str, set[str]] = {}
    for line in diagram.splitlines():
        box = line.split(":")[0] if line.startswith("front ends:") else line.split("/")[0]
        if "──▶" not in line:
            drawn.setdefault(box, set())
            continue
        targets = re.sub(r"\([^)]*\)", "", line.split("──▶", 1)[1])
        drawn[box] = {w for w in re.findall(r"\w+", targets) if w in FOLDER_NAMES}
    code: dict[str, set[str]] = {}
    for unit, deps in _runtime_imports().items():
        source = _folder(unit)
        if source is None:
            continue
        code.setdefault(source, set()).update(t for d in deps if (t := _folder(d)) not in (None, source))
    assert drawn == code, f"docs/architecture.md's diagram is stale: drawn {drawn}, in the code {code}"
