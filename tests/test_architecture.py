"""Dependencies point one way: flows → tasks → itool_core. Core never imports Prefect or MLflow."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_orchestration():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & {"prefect", "mlflow", "tasks", "flows", "prefect_dask"})
        for p in (ROOT / "itool_core").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_tasks_never_import_flows():
    if not (ROOT / "tasks").exists():
        return
    offenders = {str(p): _imports(p) & {"flows"} for p in (ROOT / "tasks").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_eval_or_exec_in_project_code():
    bad = []
    for pkg in ("itool_core", "tasks", "flows"):
        for p in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
                    bad.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert bad == []
