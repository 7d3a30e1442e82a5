"""Documentation that cannot rot silently: every relative link and anchor of the Markdown files
resolves, every repository path the docs name in backticks exists, and docs/rulegraph.svg shows
the rule graph that `snakemake --rulegraph` gives today."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

from conftest import REPO

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
# Backticked repository paths: a top-level directory of the project, then a file name; no
# wildcards or placeholders (`results/...` are outputs, not part of the repository).
REPO_PATH = re.compile(
    r"`((?:workflow|scripts|genre_classification|config|profiles|envs|containers|tests|"
    r"benchmarks|docs|\.ci|\.test)/[A-Za-z0-9_./-]+)`"
)


# What `make container` and `make test-data` make: named by the docs, not in the repository.
GENERATED = re.compile(r"\.sif$|^\.test/(results|logs|data)/")


def markdown_files(root: Path = REPO) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    return [root / name for name in listed]


def _outside_fences(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        lines.append("" if fenced else line)
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (lower case, punctuation dropped, spaces
    to hyphens, -1, -2 ... for repeats)."""
    seen: dict[str, int] = {}
    found = set()
    for line in _outside_fences(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(files: list[Path]) -> list[str]:
    """``<file>: <target>`` of every relative link whose file or anchor does not exist."""
    problems = []
    for path in files:
        for line in _outside_fences(path.read_text()):
            for match in LINK.finditer(line):
                target = match.group(1) or match.group(2)
                if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                    continue
                name, _, anchor = target.partition("#")
                linked = (path.parent / name).resolve() if name else path
                if not linked.exists():
                    problems.append(f"{path.name}: {target} (no such file)")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    problems.append(f"{path.name}: {target} (no such heading)")
    return problems


def missing_paths(files: list[Path], root: Path = REPO) -> list[str]:
    problems = []
    for path in files:
        for line in path.read_text().splitlines():
            for name in REPO_PATH.findall(line):
                if not GENERATED.search(name) and not (root / name.rstrip("/.")).exists():
                    problems.append(f"{path.relative_to(root)}: `{name}`")
    return problems


def test_every_link_and_anchor_resolves():
    files = markdown_files()
    assert len(files) >= 5
    assert broken_links(files) == []


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Its `second` part\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Usage\n[ok](other.md#its-second-part) [self](#usage) "
        "[gone](missing.md) [bad anchor](other.md#nowhere) [own](#not-here)\n"
        "```\n[in a code block](ignored.md)\n```\n"
    )
    assert broken_links([page]) == [
        "page.md: missing.md (no such file)",
        "page.md: other.md#nowhere (no such heading)",
        "page.md: #not-here (no such heading)",
    ]


def test_every_repository_path_the_docs_name_exists(tmp_path):
    assert missing_paths(markdown_files()) == []
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "there.py").write_text("")
    page = tmp_path / "page.md"
    page.write_text("`scripts/there.py` and `scripts/gone.py`\n")
    assert missing_paths([page], tmp_path) == ["page.md: `scripts/gone.py`"]


def _svg_edges(svg: str) -> set[tuple[str, str]]:
    """(rule, rule) edges of a Graphviz SVG: node ids from <title>, rule names from <text>."""
    names = dict(re.findall(r'class="node">\s*<title>(\w+)</title>.*?<text[^>]*>([^<]+)</text>',
                            svg, flags=re.S))  # fmt: skip
    edges = re.findall(r'class="edge">\s*<title>(\w+)->(\w+)</title>', svg)
    return {(names[a], names[b]) for a, b in edges} | {(n, n) for n in names.values()}


def _dot_edges(dot: str) -> set[tuple[str, str]]:
    names = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, flags=re.M))
    edges = re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.M)
    return {(names[a], names[b]) for a, b in edges} | {(n, n) for n in names.values()}


def test_the_rule_graph_picture_is_current(workflow_dir):
    """docs/rulegraph.svg (`make dag`) against the rule graph of the demo's configuration (a
    DVC source, as `make run`)."""
    dot = workflow_dir("--rulegraph").stdout
    now = _dot_edges(dot)
    assert ("fetch_audio", "fetch_audio") in now and ("train_model", "evaluate_model") in now
    pictured = _svg_edges(html.unescape((REPO / "docs" / "rulegraph.svg").read_text()))
    assert pictured == now, (
        f"docs/rulegraph.svg is out of date (make dag): missing {sorted(now - pictured)}, "
        f"extra {sorted(pictured - now)}"
    )


def test_readme_is_short_and_starts_with_what_a_newcomer_runs():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move reference into docs/"
    assert lines[2:6] == ["```bash", lines[3], lines[4], "```"]
    assert lines[3].startswith("make run ") and lines[4].startswith("make test ")
    first = "\n".join(lines[:100])
    for command in (
        "snakemake -c8 --configfile config/config.yaml",  # own folder
        "snakemake --profile profiles/slurm",  # Slurm
        "genre-classification predict",  # a prediction
    ):
        assert command in first, f"{command!r} is not in README's first 100 lines"


def test_every_doc_is_reachable_from_the_readme():
    readme = (REPO / "README.md").read_text()
    linked = {m.group(1).split("#")[0] for m in LINK.finditer(readme) if m.group(1)}
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{doc.name}" in linked, f"docs/{doc.name} is not linked from README.md"
