"""Runs every fenced ```python block of README.md and docs/*.md, so a doc example that drifts from the
API fails CI.

Each block runs alone in a fresh interpreter (cwd and PYTHONPATH = the repository root), as a reader
would paste it. A block whose first line starts with `# doctest: skip` is skipped with the reason
that follows; a block that imports an optional extra that is not installed (diffusers, matplotlib,
...) is skipped saying which. The block is written padded with blank lines so that a traceback's
line numbers are the line numbers of the markdown file.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARK = "# doctest: skip"
TIMEOUT_S = 120  # per block; the blocks are meant to take seconds (the slowest builds a tiny SD3 model)
# Top-level modules of the package's extras (setup.py's extras_require): a block needing one that is
# not installed is skipped, as the tests importorskip them; any other missing module is an error.
OPTIONAL_MODULES = {"diffusers": "diffusers", "transformers": "diffusers", "accelerate": "diffusers",
                    "matplotlib": "demo", "triton": "triton", "k_diffusion": "k-diffusion"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int    # 1-based line of the opening fence
    lang: str
    code: str    # dedented by the fence's indentation

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def fenced_blocks(text: str, path: Path) -> list[Block]:
    """Every fenced block of a markdown text, with its language and the line of its opening fence."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].strip()
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1:end]]
        blocks.append(Block(path, i + 1, info.split()[0] if info else "", "\n".join(body) + "\n"))
        i = end + 1
    return blocks


def python_blocks() -> list[Block]:
    return [b for path in DOC_FILES for b in fenced_blocks(path.read_text(encoding="utf-8"), path)
            if b.lang == "python"]


def skip_reason(block: Block) -> str | None:
    """Why the block is not run here, or None."""
    first = block.code.lstrip("\n").split("\n", 1)[0].strip()
    if first.startswith(SKIP_MARK):
        return first[len(SKIP_MARK):].strip(" :()") or "marked `# doctest: skip` without a reason"
    try:
        tree = ast.parse(block.code)
    except SyntaxError:
        return None  # running it reports the syntax error with its line
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    for module in sorted(imported & OPTIONAL_MODULES.keys()):
        if importlib.util.find_spec(module) is None:
            return f"needs {module} (pip install .[{OPTIONAL_MODULES[module]}])"
    return None


BLOCKS = python_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block_runs(block: Block, tmp_path: Path):
    reason = skip_reason(block)
    if reason:
        pytest.skip(reason)
    # Padding: the block's first line lands on its markdown line, so tracebacks point into the doc.
    script = tmp_path / (block.path.name + ".py")
    script.write_text("\n" * block.line + block.code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "MPLBACKEND": "Agg"}
    try:
        result = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
        pytest.fail(f"{block.id}: the block did not finish within {TIMEOUT_S} s\n--- stderr ---\n{stderr}",
                    pytrace=False)
    if result.returncode != 0:
        pytest.fail(f"{block.id}: the block exited with status {result.returncode} (traceback line numbers are "
                    f"{block.path.name}'s)\n--- stderr ---\n{result.stderr}\n--- stdout ---\n{result.stdout}",
                    pytrace=False)


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def test_relative_links_point_to_files_in_the_repository():
    """The docs stand on their own: every link that is not a URL names a file of this repository."""
    broken = []
    for path in DOC_FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in LINK.finditer(line):
                target = match["target"].split("#")[0]
                if not target or re.match(r"[a-z]+:", target):
                    continue  # an anchor in the same page, or a URL (https:, mailto:)
                resolved = (path.parent / target).resolve()
                if ROOT not in resolved.parents or not resolved.exists():
                    broken.append(f"{path.relative_to(ROOT)}:{number}: {match['target']}")
    assert not broken, "links to files that are not in the repository:\n" + "\n".join(broken)


def test_docs_have_python_blocks_to_run():
    """Guards against a parser change that silently finds nothing to run."""
    assert {b.path.name for b in BLOCKS} >= {"README.md", "ops.md"}, [b.id for b in BLOCKS]


def test_fence_parser_finds_language_line_indent_and_skip_reason():
    doc = textwrap.dedent("""\
        text
        ```python
        x = 1
        ```
        ```bash
        echo no
        ```
        - item

          ```python
          # doctest: skip (needs a GPU)
          y = 2
          ```
        ````python
        s = "```"
        ````
        """)
    blocks = fenced_blocks(doc, ROOT / "README.md")
    assert [(b.lang, b.line) for b in blocks] == [("python", 2), ("bash", 5), ("python", 10), ("python", 14)]
    assert blocks[0].code == "x = 1\n"
    assert blocks[2].code == "# doctest: skip (needs a GPU)\ny = 2\n"
    assert skip_reason(blocks[2]) == "needs a GPU"
    assert skip_reason(blocks[0]) is None
    assert blocks[3].code == 's = "```"\n'
