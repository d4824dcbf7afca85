"""The layout's rules, checked on the source: no import cycle inside mimmia_core, no function over 60
lines, no Streamlit in the core, and no test module importing another."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "mimmia_core"
MAX_LINES = 60


def _modules() -> dict:
    """module name (relative to mimmia_core, dotted) -> parsed tree."""
    out = {}
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__") or "__init__"
        out[name] = (path, ast.parse(path.read_text()))
    return out


def _imports(name: str, tree: ast.AST, known) -> set:
    """The mimmia_core modules `name` imports, at module level or inside functions."""
    package = name.split(".")[:-1] if not name.endswith("__init__") else name.split(".")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1] if node.level > 1 else package
            target = ".".join([*base, node.module] if node.module else base)
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mimmia_core"):
            found.add(node.module.removeprefix("mimmia_core").lstrip(".") or "__init__")
    return {m for m in found if m in known and m != name and m != "__init__"}


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, tree, modules) for name, (_, tree) in modules.items() if name != "__init__"}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"


def test_no_function_over_60_lines():
    long = []
    for path in sorted([*CORE.rglob("*.py"), *(REPO / "app_pages").glob("*.py"), REPO / "app.py",
                        *(REPO / "bench").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def test_the_core_never_imports_streamlit():
    for name, (path, tree) in _modules().items():
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "streamlit" for n in names), path


def test_test_modules_import_no_other_test_module():
    """What tests share lives in conftest.py as fixtures; a test module imports only libraries."""
    local = {p.stem for p in (REPO / "tests").glob("*.py")}
    crossing = []
    for path in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            crossing += [f"{path.name} imports {n}" for n in names if n.split(".")[0] in local]
    assert not crossing, crossing
