"""Dependencies point one way: flows → tasks → itool_core; inside core, base < data < {engines, train, eval,
mcts} < {report, cli}. Core never imports Prefect or MLflow."""

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


# ------------------------------------------------------------------------------------- layering inside core
#
# Imports inside itool_core point down this order; a module may import its own layer and any layer below:
#
#   0 base     registry, config, schemas, artifacts, calls, models, bfcl_checker (and the package itself)
#   1 data     itool_core.data.*: loaders, normalisation, tokenisation of SFT pairs, split, replay, build
#   2 middle   engines, train, eval, mcts — independent components, except the cross-edges in MIDDLE_EDGES
#   3 top      report, cli (the itool_core/cli/ package): they may import anything
#
# A new top-level module or package of itool_core must be given a layer here (the test says so).

BASE = {"registry", "config", "schemas", "artifacts", "calls", "models", "bfcl_checker", "dataclass_io"}
LAYER_OF = {**{m: 0 for m in BASE}, "data": 1, "engines": 2, "train": 2, "eval": 2, "mcts": 2, "report": 3, "cli": 3}
LAYER_NAMES = ("base", "data", "middle", "top")

#: Allowed imports between different middle-layer components (importer → imported), and why.
MIDDLE_EDGES = {
    ("eval", "engines"): "evaluation generates with an engine (multi-turn drives one turn by turn)",
    ("mcts", "engines"): "the search policy generates and self-evaluates through an engine",
    ("train", "mcts"): "preference training reads the pairs table the search writes (mcts.pairs.PAIRS)",
}

#: Known upward imports not yet removed, with the reason; each is to be fixed, not added to (none today: the
#: config finds a benchmark's categories through the registry, and the BFCL checker lives in the base layer).
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """itool_core module → the itool_core modules it imports: absolute and relative imports, at any depth
    (inside functions too), each resolved to a module where ``from pkg import name`` names a submodule."""
    files = {_module_name(p, root): p for p in (root / "itool_core").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.split(".")[0] == "itool_core"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "itool_core":
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    out.add(sub if sub in files else target)
        graph[mod] = {m for m in out if m != mod}
    return graph


def _component(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(mod: str) -> int | None:
    comp = _component(mod)
    return 0 if comp == "" else LAYER_OF.get(comp)


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            lm, ld = _layer(mod), _layer(dep)
            if lm is None or ld is None:
                continue  # reported by test_every_core_module_has_a_layer
            if (mod, dep) in KNOWN_EXCEPTIONS:
                continue
            if ld > lm:
                bad.append(f"{mod} ({LAYER_NAMES[lm]}) imports {dep} ({LAYER_NAMES[ld]})")
            elif (
                lm == ld == 2
                and _component(mod) != _component(dep)
                and (_component(mod), _component(dep)) not in MIDDLE_EDGES
            ):
                bad.append(
                    f"{mod} imports {dep}: {_component(mod)} → {_component(dep)} is not an allowed "
                    f"middle-layer edge ({sorted(MIDDLE_EDGES)})"
                )
    return bad


def test_every_core_module_has_a_layer():
    unknown = sorted(m for m in core_import_graph() if _layer(m) is None)
    assert unknown == [], f"give these itool_core modules a layer in LAYER_OF (tests/test_architecture.py): {unknown}"


def test_known_exceptions_are_still_real():
    graph = core_import_graph()
    stale = [k for k in KNOWN_EXCEPTIONS if k[1] not in graph.get(k[0], set())]
    assert stale == [], f"these upward imports are gone: delete them from KNOWN_EXCEPTIONS: {stale}"


def test_core_imports_point_down_the_layers():
    bad = layering_violations(core_import_graph())
    assert bad == [], "imports against the layer order:\n" + "\n".join(bad)


def test_layering_check_sees_relative_function_level_and_submodule_imports(tmp_path):
    pkg = tmp_path / "itool_core"
    (pkg / "data").mkdir(parents=True)
    (pkg / "train").mkdir()
    (pkg / "eval").mkdir()
    for p in (pkg, pkg / "data", pkg / "train", pkg / "eval"):
        (p / "__init__.py").write_text("")
    (pkg / "calls.py").write_text("")
    (pkg / "train" / "sft.py").write_text("from ..calls import x\n")
    (pkg / "eval" / "bfcl.py").write_text("from ..train import sft\n")  # eval → train: not an allowed edge
    (pkg / "data" / "replay.py").write_text("def f():\n    from ..train.sft import pair\n")
    (pkg / "data" / "augment.py").write_text("import itool_core.eval.bfcl\n")
    graph = core_import_graph(tmp_path)
    assert graph["itool_core.data.replay"] == {"itool_core.train.sft"}
    assert graph["itool_core.eval.bfcl"] == {"itool_core.train.sft"}
    assert graph["itool_core.train.sft"] == {"itool_core.calls"}
    bad = layering_violations(graph)
    assert len(bad) == 3 and all(any(m in b for b in bad) for m in ("data.replay", "data.augment", "eval.bfcl"))


# ---------------------------------------------------------------------------------------- design citations


def _anchors(markdown: str) -> set[str]:
    # GitHub's heading anchors: lower case, punctuation other than "-" dropped, spaces → "-"
    import re

    return {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in markdown.splitlines()
        if line.startswith("#")
    }


def test_design_citations_point_to_existing_sections():
    import re

    anchors = _anchors((ROOT / "docs" / "design.md").read_text())
    missing = []
    for pkg in ("itool_core", "tasks", "flows", "bench"):
        for p in (ROOT / pkg).rglob("*.py"):
            for m in re.finditer(r"docs/design\.md#([\w\-]+)", p.read_text()):
                if m.group(1) not in anchors:
                    missing.append(f"{p.relative_to(ROOT)}: #{m.group(1)}")
    assert missing == [], f"no such section in docs/design.md: {missing}"
