"""The shape of the code: no function in kfac_bench/ over MAX_FUNCTION_LINES lines, no module over
MAX_MODULE_LINES lines.

A function's length is counted from its first statement after the docstring to the last line of its
last statement (the signature, the docstring and trailing comments do not count), for every function
and method, nested ones included."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kfac_bench"
MAX_FUNCTION_LINES = 80
# A module past this many lines (docstring, comments and blank lines included: what a reader scrolls)
# holds more than one thing; issue 31 split the three that were (reproduce.py 1,258, report/claims.py
# 952, bench.py 693) along their stages.
MAX_MODULE_LINES = 600


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    first = body[0] if body else None
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        body = body[1:]           # the docstring
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def function_lengths(root: Path = PACKAGE) -> list[tuple[str, str, int]]:
    """(path relative to the repository, qualified name, lines) of every function under ``root``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        out += [(str(path.relative_to(root.parent)), name, _body_lines(node)) for name, node in _functions(tree)]
    return out


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def test_the_counter_skips_the_docstring_and_counts_to_the_last_statement():
    tree = ast.parse('def f(a,\n      b):\n    """Doc\n    string."""\n    x = 1\n\n    return (x +\n            a)\n'
                     '    # a trailing comment\n\n\nclass C:\n    def m(self):\n        def inner():\n'
                     '            pass\n        return inner\n')
    assert [(name, _body_lines(node)) for name, node in _functions(tree)] == [
        ("f", 4), ("C.m", 3), ("C.m.inner", 1)]


def test_no_function_is_over_the_limit():
    offenders = [(path, name, lines) for path, name, lines in function_lengths() if lines > MAX_FUNCTION_LINES]
    assert not offenders, (f"{len(offenders)} function(s) in kfac_bench/ over {MAX_FUNCTION_LINES} lines "
                           f"(docstring excluded); split them into steps:\n"
                           + "\n".join(f"  {path}: {name}: {lines} lines" for path, name, lines in offenders))


def test_the_claims_name_roles_never_methods():
    """kfac_bench/report/claims.py takes its subjects from the registry's roles: no string in it is a
    method name."""
    from kfac_bench.registry import ROLES, method_names, methods_in_role
    source = (PACKAGE / "report" / "claims.py").read_text()
    named = {node.value for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Constant) and node.value in method_names()}
    assert not named, f"kfac_bench/report/claims.py names methods {sorted(named)}; use a role of {list(ROLES)}"
    assert methods_in_role("reference") == ("kfac",)
    assert methods_in_role("rank2") == ("deflation", "lanczos", "kfac_corrected")


def test_no_module_is_over_the_limit():
    sizes = {str(path.relative_to(PACKAGE.parent)): len(path.read_text().splitlines())
             for path in sorted(PACKAGE.rglob("*.py"))}
    assert len(sizes) > 40
    offenders = {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not offenders, (f"module(s) in kfac_bench/ over {MAX_MODULE_LINES} lines; split them along what they "
                           f"hold: {offenders}")
