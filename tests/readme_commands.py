"""The shell commands that README.md and the docs show, as a user would copy them.

A command is a line of a fenced ``bash``/``sh``/``shell``/``console`` block (comments and
``\\`` continuations handled), a line of an indented code block, or an inline code span whose
first word is a program a user runs here (``snakemake``, ``python``, ``.venv/bin/...``, ...)
followed by arguments. ``tests/test_readme.py`` runs every one of them.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [
    "README.md",
    "config/README.md",
    "docs/benchmarks.md",
    "docs/reliability.md",
    "docs/fidelity.md",
]
PROGRAMS = (
    "snakemake",
    "python",
    "python3",
    "agemapper",
    "pip",
    "conda",
    "mamba",
    "squeue",
    "scancel",
    "sacct",
    "sbatch",
    "git",
    "lint-imports",
    "cffconvert",
    "ruff",
    "snakefmt",
    "pytest",
)
SHELL_LANGS = {"bash", "sh", "shell", "console"}


def _is_command(text: str) -> bool:
    try:
        words = shlex.split(text)
    except ValueError:
        return False
    if len(words) < 2:
        return False
    first = words[0]
    return first in PROGRAMS or first.startswith(".venv/bin/")


def _strip_comment(line: str) -> str:
    """Drop a trailing ``# comment`` (outside quotes) and surrounding blanks."""
    out, quote = [], None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).strip()


def commands(text: str) -> list[str]:
    """Every command shown in a Markdown text, in order, whitespace-normalised."""
    found: list[str] = []
    lines = text.splitlines()
    i, prose = 0, []
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^(\s*)```(\w*)\s*$", line)
        if fence:
            indent, lang = fence.groups()
            block = []
            i += 1
            while i < len(lines) and not re.match(rf"^{indent}```\s*$", lines[i]):
                block.append(lines[i][len(indent) :])
                i += 1
            if lang in SHELL_LANGS:
                found += _block_commands(block)
            i += 1
            continue
        if (
            line.startswith("    ")
            and (i == 0 or not lines[i - 1].strip())
            and not line.lstrip().startswith(("-", "*", "|"))
        ):
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            found += [c for c in _block_commands(block) if _is_command(c)]
            continue
        prose.append(line)
        i += 1
    joined = "\n".join(prose)
    for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", joined):
        span = " ".join(span.split())
        if _is_command(span):
            found.append(span)
    return found


def _block_commands(block: list[str]) -> list[str]:
    out, pending = [], ""
    for raw in block:
        line = _strip_comment(raw)
        if not line and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            out.append(" ".join(line.split()) if "'" not in line else line)
    return out


def shown_commands() -> dict[str, list[str]]:
    """Command -> the pages that show it, over README.md and the docs pages."""
    shown: dict[str, list[str]] = {}
    for page in PAGES:
        path = REPO / page
        if path.exists():
            for command in commands(path.read_text()):
                shown.setdefault(command, []).append(page)
    return shown
