"""The package's layout, read from its source: no import circles, Optuna and MLflow only where they
belong, and no tag or attribute name written out anywhere but :mod:`ablate.records`.

Every import counts, function-local ones included (a circle hidden inside a function is still a
circle). The checks read the files with :mod:`ast`; nothing is imported.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ablate import records

PACKAGE = Path(__file__).resolve().parent.parent / "ablate"

# Where each library may be imported (module names; a trailing ".*" covers a package's modules).
ALLOWED = {
    "optuna": {"ablate.sweep.*", "ablate.space", "ablate.analysis", "ablate.analysis.*"},
    "mlflow": {"ablate.tracking", "ablate.tracking.*", "ablate.report.collect"},
}
# The modules that write or read MLflow tags and Optuna attributes: even a plain-word tag name
# ("status", "dataset") written out there is a second copy of the vocabulary. (Elsewhere such words
# are other things: a study field "tricks", the CLI command "worker", a report column.)
TAG_HANDLERS = {"ablate.tracking", "ablate.report.collect", "ablate.sweep.runs", "ablate.sweep.worker"}


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _matches(module: str, patterns: set[str]) -> bool:
    return any(module == p or (p.endswith(".*") and module.startswith(p[:-1])) for p in patterns)


def _imports(path: Path, module: str, known: set[str]) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every import in the file, resolved against ``known``."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                yield (sub if sub in known else source), node.lineno


def _graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(root)
    known = set(modules)
    return {m: {t for t, _ in _imports(p, m, known) if t in known and t != m} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    """Bare string statements: docstrings of modules, classes and functions, and attribute docs."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)}


def _strings(path: Path) -> Iterator[tuple[str, int]]:
    """Every string literal of the file but docstrings (parts of f-strings included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.value, node.lineno


def _vocabulary() -> tuple[set[str], set[str]]:
    """``(dotted names, plain-word names)`` of the tags, attributes and artifacts in records."""
    names = {v for k, v in vars(records).items()
             if k.startswith(("TAG_", "ATTR_", "ARTIFACT_")) and isinstance(v, str)}
    return {n for n in names if "." in n}, {n for n in names if "." not in n}


def layout_problems(root: Path = PACKAGE) -> list[str]:
    """Every breach of the layout rules in the package at ``root``, one line each."""
    problems = [f"import circle: {' <-> '.join(c)}" for c in _cycles(_graph(root))]
    modules = _modules(root)
    known = set(modules)
    for module, path in modules.items():
        for target, line in _imports(path, module, known):
            library = target.split(".")[0]
            if library in ALLOWED and not _matches(module, ALLOWED[library]):
                allowed = ", ".join(sorted(ALLOWED[library]))
                problems.append(f"{module}:{line}: imports {target} (allowed in: {allowed})")
    dotted, plain = _vocabulary()
    dotted_re = re.compile(r"(?<![\w.])(" + "|".join(re.escape(n) for n in sorted(dotted)) + r")(?![\w])")
    for module, path in modules.items():
        if module == records.__name__:
            continue
        handler = _matches(module, TAG_HANDLERS)
        for text, line in _strings(path):
            hit = dotted_re.search(text)
            if hit or (handler and text in plain):
                problems.append(f"{module}:{line}: the literal {text!r} names "
                                f"{hit.group(1) if hit else text!r}; use ablate.records")
    return problems


def test_the_package_keeps_its_layout():
    problems = layout_problems()
    assert not problems, "\n".join(problems)


# --- the checks themselves, on small trees that break each rule ----------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "ablate"
    for name, body in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    return root


def test_a_circle_hidden_in_a_function_is_found(tmp_path):
    root = _tree(tmp_path, {"a.py": "from ablate import b\n",
                            "b.py": "def f():\n    from ablate.a import x\n"})
    assert layout_problems(root) == ["import circle: ablate.a <-> ablate.b"]


def test_optuna_and_mlflow_outside_their_modules_are_named(tmp_path):
    root = _tree(tmp_path, {"train.py": ("import optuna\n\n"
                                         "def f():\n    from mlflow.tracking import MlflowClient\n"),
                            "tracking.py": "import mlflow\n",
                            "sweep/__init__.py": "", "sweep/worker.py": "import optuna\n"})
    problems = layout_problems(root)
    assert [p.split(": imports ")[0] for p in problems] == ["ablate.train:1", "ablate.train:4"]


@pytest.mark.parametrize(("module", "body", "flagged"), [
    ("report/layout.py", 'ARM = "ablate.arm"\n', True),
    ("report/layout.py", 'q = f"tags.`optuna.trial_number` = {n}"\n', True),
    ("report/layout.py", 'def f():\n    """Reads the ``ablate.arm`` tag."""\n', False),  # docs may name it
    ("report/layout.py", 'column = "stop_reason"\n', False),  # a report column, not a tag write
    ("report/collect.py", 'column = "stop_reason"\n', True),  # the reader: use records.TAG_STOP_REASON
    ("sweep/worker.py", 'tags = {"status": "completed"}\n', True),
    ("report/layout.py", 'import ablate.sweep.storage\nname = "optuna.storages"\n', False),
])
def test_a_written_out_tag_name_is_found(tmp_path, module, body, flagged):
    root = _tree(tmp_path, {"report/__init__.py": "", "sweep/__init__.py": "", module: body})
    assert bool(layout_problems(root)) is flagged
