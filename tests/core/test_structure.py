"""The shape of the code, measured with ``ast``: short functions, modules of a readable size, a
Qt-free core and no copied blocks.

Limits (issue 16): no function or method in ``crc_core/`` or ``app/`` over ``MAX_FUNCTION_LINES``
lines (decorators to the last line of the body), no module there over ``MAX_MODULE_LINES`` lines,
no ``crc_core`` module importing Qt (PySide6, PyQt5/6, shiboken6, qtpy, superqt, pyqtgraph) and no
block of ``DUPLICATE_LINES`` or more identical lines appearing twice anywhere outside ``tests/``
(lines compared stripped; blank lines, comments, docstrings and import statements do not count).

The allow-lists hold what was over a limit when the test was written; each entry is to be split.
They only shrink: an entry that no longer offends fails the test too, so the list stays true.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 700
DUPLICATE_LINES = 6
QT_MODULES = {"PySide6", "PyQt5", "PyQt6", "shiboken6", "qtpy", "superqt", "pyqtgraph"}
SKIP_DIRS = {"tests", ".venv", "venv", "build", "dist", "node_modules", "__pycache__"}

# "path:qualified.name" -> allowed while it is split
LONG_FUNCTIONS_ALLOWED: set[str] = set()  # empty: keep it so
LONG_MODULES_ALLOWED: set[str] = set()  # empty: keep it so
# frozenset of the files sharing a block -> allowed while it is merged
DUPLICATES_ALLOWED: set[frozenset[str]] = set()  # empty: keep it so


def _python_files(*tops: str) -> list[Path]:
    out = []
    for top in tops:
        for p in sorted((ROOT / top).rglob("*.py")):
            rel = p.relative_to(ROOT)
            if not SKIP_DIRS.intersection(rel.parts[:-1]) and not rel.parts[0].startswith("."):
                out.append(p)
    return out


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, prefix + node.name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, prefix + node.name + ".")
        else:
            yield from _functions(node, prefix)


def _span(node: ast.AST) -> int:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return node.end_lineno - first + 1


def long_functions(files: list[Path]) -> dict[str, int]:
    out = {}
    for p in files:
        for name, node in _functions(ast.parse(p.read_text(encoding="utf-8"))):
            n = _span(node)
            if n > MAX_FUNCTION_LINES:
                out[f"{_rel(p)}:{name}"] = n
    return out


def long_modules(files: list[Path]) -> dict[str, int]:
    out = {}
    for p in files:
        n = len(p.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            out[_rel(p)] = n
    return out


def qt_imports(files: list[Path]) -> list[str]:
    out = []
    for p in files:
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] in QT_MODULES:
                    out.append(f"{_rel(p)}:{node.lineno} imports {name}")
    return out


def _uncounted_lines(tree: ast.AST) -> set[int]:
    """Line numbers of import statements and docstrings."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            skip.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                skip.update(range(body[0].lineno, body[0].end_lineno + 1))
    return skip


def normalised_lines(source: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of the lines that count for duplication."""
    skip = _uncounted_lines(ast.parse(source))
    out = []
    for i, line in enumerate(source.splitlines(), 1):
        s = line.strip()
        if s and not s.startswith("#") and i not in skip:
            out.append((i, s))
    return out


def duplicate_blocks(files: list[Path], size: int = DUPLICATE_LINES) -> dict[frozenset[str], list]:
    """Blocks of ``size`` identical normalised lines found at two or more places.

    Returns {files involved: [[(path, first line), ...] per block]}; overlapping windows of one
    longer copied block are reported once.
    """
    where: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for p in files:
        lines = normalised_lines(p.read_text(encoding="utf-8"))
        for k in range(len(lines) - size + 1):
            key = tuple(s for _, s in lines[k : k + size])
            where[key].append((_rel(p), lines[k][0]))
    out: dict[frozenset[str], list] = defaultdict(list)
    for locs in where.values():
        if len(locs) > 1:
            out[frozenset(f for f, _ in locs)].append(sorted(locs))
    return {k: _first_of_runs(v) for k, v in out.items()}


def _first_of_runs(blocks: list[list[tuple[str, int]]]) -> list[list[tuple[str, int]]]:
    """Keep one window per run of consecutive overlapping windows (one copied block)."""
    blocks.sort()
    kept: list[list[tuple[str, int]]] = []
    for b in blocks:
        last = kept[-1] if kept else []
        if len(b) == len(last) and all(
            f == g and 0 < line - prev <= DUPLICATE_LINES * 3
            for (f, line), (g, prev) in zip(b, last, strict=True)
        ):
            continue
        kept.append(b)
    return kept


CORE_AND_APP = ["crc_core", "app"]


def test_no_function_over_the_limit():
    found = long_functions(_python_files(*CORE_AND_APP))
    new = {k: v for k, v in found.items() if k not in LONG_FUNCTIONS_ALLOWED}
    assert not new, f"functions over {MAX_FUNCTION_LINES} lines (split into phases): " + ", ".join(
        f"{k} ({v} lines)" for k, v in sorted(new.items())
    )
    stale = LONG_FUNCTIONS_ALLOWED - set(found)
    assert not stale, f"no longer too long, remove from LONG_FUNCTIONS_ALLOWED: {sorted(stale)}"


def test_no_module_over_the_limit():
    found = long_modules(_python_files(*CORE_AND_APP))
    new = {k: v for k, v in found.items() if k not in LONG_MODULES_ALLOWED}
    assert not new, f"modules over {MAX_MODULE_LINES} lines (make a package): " + ", ".join(
        f"{k} ({v} lines)" for k, v in sorted(new.items())
    )
    stale = LONG_MODULES_ALLOWED - set(found)
    assert not stale, f"no longer over the limit, remove from LONG_MODULES_ALLOWED: {sorted(stale)}"


def test_core_imports_no_qt():
    found = qt_imports(_python_files("crc_core"))
    assert not found, "crc_core must stay Qt-free: " + "; ".join(found)


def test_no_block_repeated_outside_tests():
    tops = sorted(
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and p.name not in SKIP_DIRS and not p.name.startswith(".")
    )
    found = duplicate_blocks(_python_files(*tops))
    new = {k: v for k, v in found.items() if k not in DUPLICATES_ALLOWED}
    where = "; ".join(
        " and ".join(f"{f}:{line}" for f, line in b) for blocks in new.values() for b in blocks
    )
    assert not new, f"blocks of {DUPLICATE_LINES}+ identical lines (make one function): {where}"
    stale = DUPLICATES_ALLOWED - set(found)
    stale_names = sorted(map(sorted, stale))
    assert not stale, f"no longer repeated, remove from DUPLICATES_ALLOWED: {stale_names}"


# The checks themselves, on small sources: each must catch what it is for.


def test_checks_catch_offenders(tmp_path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "pkg").mkdir()
    big = tmp_path / "pkg" / "big.py"
    body = long_body.replace(chr(10), chr(10) + "    ")
    big.write_text(f"class C:\n    def f(self):\n    {body}\n")
    huge = tmp_path / "pkg" / "huge.py"
    huge.write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    qt = tmp_path / "pkg" / "qt.py"
    qt.write_text("from PySide6.QtCore import QObject\nimport numpy\n")
    block = "".join(f"a{i} = f({i})\n" for i in range(DUPLICATE_LINES))
    one = tmp_path / "pkg" / "one.py"
    one.write_text('"""Doc."""\nimport os\n' + block)
    two = tmp_path / "pkg" / "two.py"
    two.write_text("import os\n\n# note\n" + block.replace("\n", "  \n"))
    short = tmp_path / "pkg" / "short.py"
    short.write_text("".join(f"a{i} = f({i})\n" for i in range(DUPLICATE_LINES - 1)))
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert list(long_functions([big])) == ["pkg/big.py:C.f"]
        assert long_modules([big, huge]) == {"pkg/huge.py": MAX_MODULE_LINES + 1}
        assert qt_imports([qt, one]) == ["pkg/qt.py:1 imports PySide6.QtCore"]
        dups = duplicate_blocks([one, two, short])
        assert list(dups) == [frozenset({"pkg/one.py", "pkg/two.py"})]
        pair = frozenset({"pkg/one.py", "pkg/two.py"})
        assert dups[pair] == [[("pkg/one.py", 3), ("pkg/two.py", 4)]]
    finally:
        ROOT = saved
