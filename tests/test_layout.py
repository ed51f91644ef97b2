"""The shape of the code: no import cycles, the pipeline on top, light imports.

The import graph is read from the source with `ast`: every `import tpo...` / `from tpo... import`
anywhere in a module (inside functions too, where a cycle likes to hide), except under
`if TYPE_CHECKING:`. `python tests/test_layout.py` prints the measures DESIGN.md quotes.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"
PACKAGE = SRC / "tpo"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def _with_parents(name: str) -> list[str]:
    """`tpo.a.b` and the packages importing it runs: `tpo.a`, `tpo`."""
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts) + 1)]


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The tpo modules `path` imports, with the packages whose __init__ that import runs."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import (write tpo...)"
            assert node.module is not None
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            found.update(n for n in _with_parents(name) if n in known)
    me = module_name(path) if path.is_relative_to(SRC) else ""
    return found - set(_with_parents(me))


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_imports_include_the_packages_they_run(tmp_path: Path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from tpo.eval.results import COLUMNS\n")
    known = {"tpo", "tpo.eval", "tpo.eval.results", "tpo.store"}
    assert imports_of(mod, known) == {"tpo", "tpo.eval", "tpo.eval.results"}


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_pipeline_and_cli_are_on_top() -> None:
    """Nothing below the loop imports it (the package face's lazy `run` and the CLI may)."""
    graph = import_graph()
    for top in ("tpo.pipeline", "tpo.cli"):
        users = sorted(m for m, deps in graph.items() if top in deps)
        assert set(users) <= {"tpo", "tpo.cli"}, f"{top} is imported by {users}"


def test_the_cli_names_the_pipeline_stages_in_order() -> None:
    from tpo import cli, pipeline

    assert tuple(pipeline.STAGES) == cli.STAGE_NAMES


def test_floor_modules_import_no_stage() -> None:
    """config, records, store, seeds, thoughts, constraints, models, endpoint, allocator are
    the floor:
    they import none of the stage packages."""
    graph = import_graph()
    floor = ("tpo.config", "tpo.records", "tpo.store", "tpo.seeds", "tpo.thoughts")
    floor += ("tpo.constraints", "tpo.models", "tpo.endpoint", "tpo.allocator")
    stages = ("tpo.generate", "tpo.judge", "tpo.eval", "tpo.serve", "tpo.data", "tpo.train")
    for name, deps in graph.items():
        if name.startswith(floor):
            bad = sorted(d for d in deps if d.startswith(stages))
            assert not bad, f"{name} imports {bad}"


def test_light_imports_do_not_load_torch() -> None:
    """The package, the CLI, the vLLM parser plugin, the judges and the openai generation
    backend import without torch."""
    light = [
        "tpo",
        "tpo.cli",
        "tpo.pipeline",
        "tpo.serve.vllm_parser",
        "tpo.serve.server",
        "tpo.judge.verifier",
        "tpo.judge.llm",
        "tpo.judge.reward_model",
        "tpo.eval.suite",
        "tpo.generate.pool",
        "tpo.generate.served",
    ]
    code = "import sys\n" + "".join(f"import {m}\n" for m in light)
    code += "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- measures (printed by `python tests/test_layout.py`) ----------------------------------

WINDOW = 6  # lines that make a repeated block


def _code_lines(path: Path, shape: bool) -> list[tuple[int, str]]:
    """(line number, text) of the logical code lines, imports, docstrings and comments left
    out; with `shape`, names, strings and numbers are replaced by placeholders."""
    import io
    import keyword
    import tokenize

    lines: dict[int, list[str]] = {}
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    previous = None
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type in skip or tok.type == tokenize.ENDMARKER:
            previous = tok.type
            continue
        text = tok.string
        if tok.type == tokenize.STRING and previous in (tokenize.INDENT, tokenize.NEWLINE, None):
            previous = tok.type  # a docstring (or a bare string statement)
            continue
        if shape and tok.type == tokenize.NAME and not keyword.iskeyword(text):
            text = "N"
        elif shape and tok.type in (tokenize.STRING, tokenize.NUMBER):
            text = "S"
        lines.setdefault(tok.start[0], []).append(text)
        previous = tok.type
    out = [(n, " ".join(toks)) for n, toks in sorted(lines.items())]
    return [(n, t) for n, t in out if not t.startswith(("import ", "from "))]


def repeated_blocks(shape: bool = False) -> int:
    """Pairs of places that share a run of WINDOW code lines (identical, or with `shape`
    identical but for names and values), each pair counted once however long its run."""
    where: dict[tuple[str, ...], list[tuple[str, int]]] = {}
    for name, path in modules().items():
        lines = _code_lines(path, shape)
        for k in range(len(lines) - WINDOW + 1):
            key = tuple(t for _, t in lines[k : k + WINDOW])
            where.setdefault(key, []).append((name, k))
    pairs: set[tuple[str, str, int]] = set()
    for places in where.values():
        if len(places) < 2 or len(places) > 8:  # too common to be one repeated block
            continue
        for a in range(len(places)):
            for b in range(a + 1, len(places)):
                (fa, ka), (fb, kb) = places[a], places[b]
                if fa == fb and abs(ka - kb) < WINDOW:
                    continue  # a run overlapping itself
                pairs.add((fa, fb, ka - kb))  # one pair per alignment of two files
    return len(pairs)


def measures() -> dict[str, object]:
    files = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    functions: list[tuple[int, str]] = []
    positional: list[tuple[int, str]] = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((lines, f"{name}.{node.name}"))
                args = [a.arg for a in node.args.posonlyargs + node.args.args]
                args = [a for a in args if a not in ("self", "cls")]
                positional.append((len(args), f"{name}.{node.name}"))
    longest_file = max(files.items(), key=lambda kv: kv[1])
    return {
        "modules": len(files),
        "lines": sum(files.values()),
        "longest file": f"{longest_file[0]} ({longest_file[1]} lines)",
        "longest functions": sorted(functions, reverse=True)[:3],
        "most positional parameters": sorted(positional, reverse=True)[:3],
        "cycles": cycles(import_graph()),
        f"repeated blocks of {WINDOW}+ identical code lines": repeated_blocks(),
        f"repeated blocks of {WINDOW}+ code lines alike but for names and values": repeated_blocks(
            shape=True
        ),
    }


if __name__ == "__main__":
    for key, value in measures().items():
        print(f"{key}: {value}")
