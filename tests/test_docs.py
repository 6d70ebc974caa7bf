"""References into docs/official.md name something that exists there; none point outside the repository.

Code comments cite the official behaviour as ``docs/official.md §8``, ``§7.3-4``, ``B1-B3``, ``S1``, ``§8, D2``.
Every section and id such a reference names must be a heading (``## §8``, ``### §7.3``) or an id entry
(``- **B7**``) of the document, and no comment may point to the developers' reference text, which is not in
the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "official.md"
SCANNED = ["hhrnet", "kernels", "export", "benchmarks", "tests", "requirements", "docs"]
TOP_FILES = ["Makefile", "pyproject.toml", "README.md"]
SUFFIXES = {".py", ".md", ".txt", ".toml", ".yaml", ".yml", ".cfg", ".sh"}

_SECTION = r"§\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?"
_ID = r"[BSD]\d+(?:-[BSD]?\d+)?"
REFERENCE = re.compile(rf"docs/official\.md((?:,? (?:{_SECTION}|{_ID})\b)+)")
# spelled in pieces so that a grep for stale references does not stop at this file
OUTSIDE = re.compile(r"\b" + "SP" + r"EC\b|\b" + "ENVIRON" + r"MENT\b|/work/" + "shared|\\.\\./shared/")


def _files() -> list[Path]:
    out = [ROOT / name for name in TOP_FILES if (ROOT / name).exists()]
    for top in SCANNED:
        out += [p for p in (ROOT / top).rglob("*") if p.suffix in SUFFIXES and "__pycache__" not in p.parts]
    return sorted(out)


def _anchors(doc: str) -> set[str]:
    """Sections (``§8``, ``§7.3``) from the headings and ids (``B7``, ``S1``, ``D2``) from the id entries."""
    sections = {f"§{m}" for m in re.findall(r"^#{2,3} §(\d+(?:\.\d+)?) ", doc, re.M)}
    return sections | set(re.findall(r"^- \*\*([BSD]\d+)\*\*", doc, re.M))


def _expand(token: str) -> list[str]:
    """``§7.3-4`` -> §7.3, §7.4; ``§7-8`` -> §7, §8; ``B1-B3`` -> B1, B2, B3; anything else as it is."""
    if "-" not in token:
        return [token]
    first, last = token.split("-")
    if first.startswith("§"):
        major, _, minor = first[1:].partition(".")
        if minor:
            return [f"§{major}.{n}" for n in range(int(minor), int(last.split(".")[-1]) + 1)]
        return [f"§{n}" for n in range(int(major), int(last.split(".")[0]) + 1)]
    kind = first[0]
    return [f"{kind}{n}" for n in range(int(first[1:]), int(last.lstrip(kind)) + 1)]


def _references(text: str) -> list[str]:
    names = []
    for match in REFERENCE.finditer(text):
        for token in re.findall(rf"{_SECTION}|{_ID}", match.group(1)):
            names += _expand(token)
    return names


def _dangling(files: dict[str, str], anchors: set[str]) -> list[str]:
    bad = []
    for name, text in files.items():
        for lineno, line in enumerate(text.splitlines(), 1):
            bad += [f"{name}:{lineno}: {ref}" for ref in _references(line) if ref not in anchors]
            if OUTSIDE.search(line):
                bad.append(f"{name}:{lineno}: points outside the repository: {line.strip()}")
    return bad


def test_the_document_has_every_section_and_id() -> None:
    anchors = _anchors(DOC.read_text())
    expected = {f"§{n}" for n in range(1, 12)} | {f"§7.{n}" for n in range(1, 8)}
    expected |= {f"B{n}" for n in range(1, 16)} | {f"S{n}" for n in range(1, 7)} | {f"D{n}" for n in range(1, 4)}
    assert anchors == expected


def test_every_reference_names_something_in_the_document() -> None:
    skip = {DOC, Path(__file__).resolve()}  # this file plants dangling references on purpose
    files = {str(p.relative_to(ROOT)): p.read_text(errors="replace") for p in _files() if p not in skip}
    assert len(files) > 50
    assert sum(len(_references(text)) for text in files.values()) > 40  # the code does cite the document
    assert _dangling(files, _anchors(DOC.read_text())) == []


def test_the_reference_check_can_fail() -> None:
    anchors = _anchors(DOC.read_text())
    planted = {
        "a.py": "# the tie rule (docs/official.md B3) and matching (docs/official.md §8, D2) exist\n",
        "b.py": "# see docs/official.md §12 and docs/official.md §7.8\n",
        "c.py": "# docs/official.md B2-B16 and docs/official.md S1-7\n",
        "d.py": "# see " + "SP" + "EC §8\n",
        "e.txt": "# see ../" + "shared/" + "ENVIRON" + "MENT.md\n",
    }
    assert _references(planted["a.py"]) == ["B3", "§8", "D2"]
    assert _expand("§7.3-4") == ["§7.3", "§7.4"] and _expand("§7-8") == ["§7", "§8"]
    assert _expand("S1-S4") == ["S1", "S2", "S3", "S4"] and _expand("B1-3") == ["B1", "B2", "B3"]
    bad = _dangling(planted, anchors)
    assert [b.split(": ")[0] + ": " + b.split(": ")[1] for b in bad] == [
        "b.py:1: §12",
        "b.py:1: §7.8",
        "c.py:1: B16",
        "c.py:1: S7",
        "d.py:1: points outside the repository",
        "e.txt:1: points outside the repository",
    ]
