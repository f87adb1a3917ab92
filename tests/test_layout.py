"""The shape of the lightray package: imports at the top of modules and in
no circle, modules of a readable size, and package docstrings that map them."""
from __future__ import annotations

import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "lightray"
MAX_LINES = 600

# (importing module, imported module): imports that may stay inside a
# function, each a lazy import of an optional dependency.
LAZY_IMPORTS_ALLOWED = {
    # dask is optional: lightray.get(dsk, keys) and get.persist import the
    # Dask scheduler (which imports dask) only when given a Dask graph.
    ("lightray.api", "lightray.dask.scheduler"),
    # The dashboard reads the runtime through lightray.api: init(include_dashboard=True)
    # imports its server only when asked for it (and never at lightray's import).
    ("lightray.api", "lightray.dashboard.server"),
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported_modules(module: str, node) -> list:
    """The lightray modules an import statement of `module` imports."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module
        if node.level:   # relative: from the module's package, up level - 1 packages
            package = module.split(".")
            if MODULES[module].name != "__init__.py":
                package = package[:-1]
            base = ".".join(package[:len(package) - node.level + 1] + [base] * bool(base))
        # `from package import name` imports the submodule when name is one.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                 for a in node.names]
    return [name for name in dict.fromkeys(names) if name.split(".")[0] == "lightray"]


def _is_type_checking(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(module: str):
    """(imported module, line, where) for each lightray import of `module`;
    where is "module", "function" or "TYPE_CHECKING"."""
    found = []

    def visit(node, where):
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = "function"
            elif _is_type_checking(child) and where == "module":
                inner = "TYPE_CHECKING"
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((target, child.lineno, where)
                             for target in _imported_modules(module, child))
            visit(child, inner)

    visit(ast.parse(MODULES[module].read_text(), str(MODULES[module])), "module")
    return found


def _module_level_graph() -> dict:
    return {module: {target for target, _, where in _imports(module)
                     if where == "module" and target != module}
            for module in MODULES}


def _find_cycle(graph: dict):
    """One import cycle as a list of modules (first == last), or None."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph.get(module, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_no_lightray_module_is_imported_inside_a_function():
    offenders = [f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: {target} ({where})"
                 for module in MODULES
                 for target, line, where in _imports(module)
                 if where != "module" and (module, target) not in LAZY_IMPORTS_ALLOWED]
    assert not offenders, ("lightray modules imported inside a function or under "
                           "TYPE_CHECKING:\n" + "\n".join(offenders))


def test_the_import_graph_of_lightray_has_no_cycle():
    cycle = _find_cycle(_module_level_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_is_longer_than_600_lines():
    long = {str(path.relative_to(PACKAGE.parent)): n for path in MODULES.values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_package_init_says_what_lives_there():
    missing = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
        members = [p.stem for p in init.parent.glob("*.py") if p.name != "__init__.py"]
        members += [p.parent.name for p in init.parent.glob("*/__init__.py")]
        unnamed = sorted(name for name in members
                         if not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", docstring))
        if unnamed:
            missing.append(f"{init.relative_to(PACKAGE.parent)} does not name {unnamed}")
    assert not missing, "\n".join(missing)

