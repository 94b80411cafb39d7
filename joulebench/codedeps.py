"""Which library files a workflow job runs, so that the rules can declare them as inputs.

Editing a module then re-runs exactly the jobs whose code imports it, directly or through other modules, and the
between-workflow cache hashes their contents. Found statically: the job's function in `joulebench.jobs`, the helpers
of `jobs` it calls, and every `joulebench` module they import, followed through all the imports of those modules
(function-level imports included, so the set is never smaller than what runs).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "joulebench"
JOBS_MODULE = "jobs"


def job_code(job: str, root: Path) -> list[str]:
    """Sorted paths (under `root`, the folder holding the package) of the files `joulebench.jobs.<job>` runs."""
    jobs_file = root / PACKAGE / f"{JOBS_MODULE}.py"
    tree = ast.parse(jobs_file.read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    if job not in functions:
        raise ValueError(f"{jobs_file}: no job function {job!r}")
    called = _called_functions(job, functions)
    modules = {name for node in tree.body if not isinstance(node, ast.FunctionDef) for name in _imports(node)}
    for name in called:
        modules |= _imports(functions[name])
    files = {jobs_file}
    pending = [file for module in modules for file in _module_files(module, root)]
    while pending:
        file = pending.pop()
        if file in files:
            continue
        files.add(file)
        pending.extend(f for module in _file_imports(file) for f in _module_files(module, root))
    return sorted(str(file) for file in files)


@functools.cache
def _file_imports(file: Path) -> frozenset[str]:
    """A module's `joulebench` imports, parsed once per process (every rule's `code()` walks the same files)."""
    return frozenset(_imports(ast.parse(file.read_text())))


def _called_functions(start: str, functions: dict[str, ast.FunctionDef]) -> set[str]:
    """`start` and the functions of the same module it calls or names, transitively."""
    seen: set[str] = set()
    pending = [start]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        used = {node.id for node in ast.walk(functions[name]) if isinstance(node, ast.Name)}
        pending.extend(used & functions.keys())
    return seen


def _imports(node: ast.AST) -> set[str]:
    """Dotted names of the `joulebench` modules (or module members) imported anywhere in `node`."""
    names: set[str] = set()
    for item in ast.walk(node):
        if isinstance(item, ast.Import):
            names |= {alias.name for alias in item.names if alias.name.split(".")[0] == PACKAGE}
        elif isinstance(item, ast.ImportFrom) and item.module and item.module.split(".")[0] == PACKAGE:
            names.add(item.module)
            names |= {f"{item.module}.{alias.name}" for alias in item.names}
    return names


def _module_files(dotted: str, root: Path) -> list[Path]:
    """The package `__init__.py` files along `dotted` and the module file it names, where they exist (a name that
    is a function or class rather than a module resolves to its module's files only)."""
    parts = dotted.split(".")
    files = []
    for depth in range(1, len(parts) + 1):
        path = root.joinpath(*parts[:depth])
        if (path / "__init__.py").is_file():
            files.append(path / "__init__.py")
        elif path.with_suffix(".py").is_file():
            files.append(path.with_suffix(".py"))
            break
        else:
            break
    return files
