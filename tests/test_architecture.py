"""The package's shape: imports go down the layers that pyproject.toml's [tool.importlinter] names, in no circle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_imports_keep_to_the_layers_and_make_no_circle():
    lint_imports = Path(sys.executable).with_name("lint-imports")  # installed with the test extra, beside python
    done = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # On failure lint-imports names each import that breaks a contract, with its file's line.
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _names_compared(tree, families: set[str]):
    """(line, name) for each family name a comparison tests, or a dict literal of family names is looked up in."""
    import ast

    def named(node) -> list[str]:
        if isinstance(node, ast.Constant) and node.value in families:
            return [node.value]
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return [n for e in node.elts for n in named(e)]
        return []

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                yield from ((node.lineno, name) for name in named(operand))
        looked_up = node.value if isinstance(node, ast.Subscript) else None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            looked_up = node.func.value
        if isinstance(looked_up, ast.Dict):
            yield from ((node.lineno, name) for key in looked_up.keys if key is not None for name in named(key))


def test_no_member_of_the_family_is_named_in_a_comparison_outside_models():
    """Whatever the package asks about a member is its `Family` (vaelab.family) or its class in vaelab.models: no
    `if family == "vqvae"` (nor `in ("iwae", ...)`, nor a dict of members looked up) anywhere else."""
    import ast

    from vaelab.family import FAMILIES

    package = ROOT / "src" / "vaelab"
    found = [
        f"{path.relative_to(ROOT)}:{line}: {name!r}"
        for path in sorted(package.rglob("*.py"))
        if package / "models" not in path.parents
        for line, name in _names_compared(ast.parse(path.read_text()), set(FAMILIES))
    ]
    assert found == []


def test_the_check_finds_a_comparison_with_a_member():
    import ast

    code = 'a = f == "vqvae"\nb = f in ("iwae", "x")\nc = {"vamp": 1}.get(f)\nd = {"cvae": 2}[f]\ne = f == "other"'
    assert list(_names_compared(ast.parse(code), {"vqvae", "iwae", "vamp", "cvae"})) == [
        (1, "vqvae"), (2, "iwae"), (3, "vamp"), (4, "cvae")
    ]  # fmt: skip
