"""The code's layout rules (docs/architecture.md): no module-level import circles, imports only downwards
(app -> explorer, never back; explorer.serving is used by the app and the CLIs, not by the library below it),
no ``sys.path`` edits, thin scripts and modules of a readable size. Static checks of the source: fast."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 700
MAX_SCRIPT_LINES = 150


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    files = [*(ROOT / "explorer").rglob("*.py"), *(ROOT / "app").rglob("*.py")]
    return {_module_name(p): p for p in files}


def _top_level_imports(path: Path, known: set[str]) -> set[str]:
    """Project modules imported at module level (not inside functions, not under TYPE_CHECKING)."""
    out: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out |= {n for n in names if n in known}
    return out


def test_no_module_level_import_circles() -> None:
    mods = _modules()
    graph = {m: _top_level_imports(p, set(mods)) - {m} for m, p in mods.items()}
    # a package's __init__ importing its own submodules is how re-exports work, not a circle
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d] if d in stack else [m, d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import circles: {cycles}"


def test_imports_point_downwards() -> None:
    mods = _modules()
    for name, path in mods.items():
        deps = _top_level_imports(path, set(mods))
        if name.startswith("explorer"):
            assert not any(d.startswith("app") for d in deps), f"{name} imports the UI"
        if name.startswith("explorer") and not name.startswith(("explorer.serving", "explorer.compare")):
            assert not any(d.startswith("explorer.serving") for d in deps), f"{name} imports the serving layer"


def test_no_sys_path_edits_and_no_loading_by_path() -> None:
    files = [*ROOT.glob("*.py"), *(ROOT / "explorer").rglob("*.py"), *(ROOT / "app").rglob("*.py"),
             *(ROOT / "scripts").glob("*.py"), *(ROOT / "tests").glob("*.py")]
    this = Path(__file__).resolve()
    offenders = [str(p.relative_to(ROOT)) for p in files if p.resolve() != this
                 and any(s in p.read_text(encoding="utf-8") for s in ("sys.path.insert", "sys.path.append",
                                                                      "spec_from_file_location"))]
    assert not offenders, f"sys.path edits or files loaded by path: {offenders}"


def test_modules_and_scripts_stay_readable() -> None:
    long_modules = {str(p.relative_to(ROOT)): n for p in _modules().values()
                    if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    long_scripts = {str(p.relative_to(ROOT)): n for p in (ROOT / "scripts").glob("*.py")
                    if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_SCRIPT_LINES}
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long_modules}"
    assert not long_scripts, f"scripts over {MAX_SCRIPT_LINES} lines (move the logic into explorer/): {long_scripts}"
