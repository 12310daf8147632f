"""The layering contracts, checked on the source (what import-linter would check, without the dependency).

Every module of ``trading_operator``, ``trading_workers`` and ``trading_dev`` is parsed (not imported) and
its imports — top-level and lazy ones inside functions alike — are resolved to modules:

* the two wings are joined only by the API: workers import ``trading_operator.api`` and nothing else of the
  operator; the operator imports nothing of the workers;
* nothing shipped (operator, workers) imports the dev tools;
* the operator's layers have a direction (``trading_operator/__init__.py``): ``handlers`` -> ``loop`` ->
  ``reconcile`` -> ``build`` -> ``api``; ``api`` imports only ``api``; ``build`` imports ``api``, ``build``,
  ``names``, ``settings``; nothing below ``handlers`` imports it or ``loop``;
* the pure layers (``api``, ``build``) reach no client, directly or through what they import;
* ``decide`` (``reconcile/session.py``) and every function of that module it calls are synchronous and
  touch neither the Kubernetes wrapper nor metrics nor asyncio: observed state in, decision out.
"""

from __future__ import annotations

import ast
import functools
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = {"trading_operator": ROOT / "operator", "trading_workers": ROOT / "workers", "trading_dev": ROOT / "devtools"}
CLIENTS = {"kubernetes", "kopf", "aiohttp", "redis", "asyncpg", "requests", "urllib3", "alpaca"}


def _module_name(base: pathlib.Path, path: pathlib.Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _sources() -> dict[str, tuple[pathlib.Path, ast.Module]]:
    out = {}
    for package, base in PACKAGES.items():
        for path in sorted((base / package).rglob("*.py")):
            out[_module_name(base, path)] = (path, ast.parse(path.read_text(), str(path)))
    return out


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if _sources()[module][0].name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@functools.cache
def imports(module: str) -> frozenset[str]:
    """Every module ``module`` imports (a ``from pkg import sub`` counts as ``pkg.sub`` when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(_sources()[module][1]):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in _sources())
    return frozenset(found)


def _reach(module: str) -> set[str]:
    """``module``'s imports, transitively through our own modules (package ``__init__`` files included)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        for target in imports(current):
            parents = [".".join(target.split(".")[:k]) for k in range(1, target.count(".") + 2)]
            for name in parents:
                if name not in seen:
                    seen.add(name)
                    if name in _sources():
                        todo.append(name)
    return seen


def _modules(prefix: str) -> list[str]:
    return [m for m in _sources() if m == prefix or m.startswith(prefix + ".")]


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_sources_are_found() -> None:
    assert {"trading_operator.api.session", "trading_workers.executor", "trading_dev.demo",
            "trading_operator.reconcile.session"} <= set(_sources())


def test_workers_import_only_the_api_of_the_operator() -> None:
    bad = {m: sorted(i for i in imports(m) if _under(i, "trading_operator") and not _under(i, "trading_operator.api"))
           for m in _modules("trading_workers")}
    assert {m: i for m, i in bad.items() if i} == {}


def test_the_operator_imports_nothing_of_the_workers() -> None:
    bad = {m: sorted(i for i in imports(m) if _under(i, "trading_workers")) for m in _modules("trading_operator")}
    assert {m: i for m, i in bad.items() if i} == {}


def test_nothing_shipped_imports_the_dev_tools() -> None:
    shipped = _modules("trading_operator") + _modules("trading_workers")
    bad = {m: sorted(i for i in imports(m) if _under(i, "trading_dev", "tests", "benchmarks")) for m in shipped}
    assert {m: i for m, i in bad.items() if i} == {}


def test_operator_layers_point_down() -> None:
    allowed = {
        "trading_operator.api": ("trading_operator.api",),
        "trading_operator.build": ("trading_operator.api", "trading_operator.build", "trading_operator.names",
                                   "trading_operator.settings"),
    }
    bad: dict[str, list[str]] = {}
    for layer, ok in allowed.items():
        for m in _modules(layer):
            wrong = sorted(i for i in imports(m) if _under(i, "trading_operator") and not _under(i, *ok)
                           and i != "trading_operator")
            if wrong:
                bad[m] = wrong
    top = ("trading_operator.handlers", "trading_operator.__main__")
    for m in _modules("trading_operator"):
        if m in top:
            continue
        above = sorted(i for i in imports(m) if i in top or (i == "trading_operator.loop" and m != i))
        if above:
            bad[m] = above
    assert bad == {}


def test_pure_layers_reach_no_client() -> None:
    bad = {}
    for m in _modules("trading_operator.api") + _modules("trading_operator.build"):
        reached = _reach(m)
        wrong = sorted(i for i in reached if i.split(".")[0] in CLIENTS
                       or _under(i, "trading_operator.kube", "trading_operator.reconcile", "trading_operator.leader",
                                 "trading_operator.handlers", "trading_operator.metrics"))
        if wrong:
            bad[m] = wrong
    assert bad == {}


def test_decide_is_pure() -> None:
    """``decide`` and the module functions it calls: no ``await``, no client, no metrics, no asyncio."""
    tree = _sources()["trading_operator.reconcile.session"][1]
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    impure_names = {"kube", "metrics", "asyncio", "kopf", "kubernetes", "time"}
    todo, seen, bad = ["decide"], set(), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        fn = functions[name]
        used = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
        problems = sorted(used & impure_names)
        if isinstance(fn, ast.AsyncFunctionDef) or any(isinstance(n, ast.Await) for n in ast.walk(fn)):
            problems.append("async")
        if problems:
            bad[name] = problems
        todo.extend(sorted(used & set(functions)))
    assert "_halt_step" in seen and "_phase_step" in seen  # the walk follows the steps
    assert bad == {}


def _test_imports() -> dict[str, set[str]]:
    tests = ROOT / "tests"
    out: dict[str, set[str]] = {}
    for path in sorted(tests.rglob("*.py")):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        out[str(path.relative_to(ROOT))] = {m for m in found if m == "tests" or m.startswith("tests.")}
    return out


# Cross-package fixture imports that predate this check, written alongside it by other work in flight
# (chaos drills, the platform-on-a-node tests, the admission tests): to move into tests/fixtures. The
# check stops new ones; this list may only shrink.
KNOWN_CROSS_IMPORTS: dict[str, set[str]] = {
    "tests/chaos/conftest.py": {"tests.drills.conftest"},
    "tests/cluster_platform/test_chart_on_node.py": {"tests.cluster_node.conftest"},
    "tests/operator/test_who_halted_cluster.py": {"tests.security.conftest"},
}


def test_no_test_package_imports_another_packages_fixtures() -> None:
    """Fixtures are shared through ``tests.fixtures`` (and the root conftest), never by importing another
    package's conftest (a package fixture imported elsewhere runs with the wrong scope and owner)."""
    packages = {p.parent.name for p in (ROOT / "tests").glob("*/__init__.py")} - {"fixtures"}
    bad = {}
    for path, mods in _test_imports().items():
        own = ".".join(pathlib.PurePath(path).parent.parts[:2])  # e.g. tests.workers (tests for root files)
        others = [f"tests.{p}.conftest" for p in packages if f"tests.{p}" != own]
        mods = mods - KNOWN_CROSS_IMPORTS.get(path, set())
        wrong = sorted(m for m in mods if _under(m, *others))
        if wrong:
            bad[path] = wrong
    assert bad == {}


def test_the_api_group_and_version_are_spelled_once_in_the_tests() -> None:
    literal, assignment = '"trading.dev", ' + '"v1alpha1"', "G, V" + " = "
    spelled = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")
                     if literal in p.read_text() or assignment in p.read_text())
    assert spelled == ["tests/fixtures/api.py"]
