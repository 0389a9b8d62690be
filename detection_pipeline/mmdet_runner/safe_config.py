"""Which MMDetection config files may be loaded: those that are data, not programs.

mmengine executes a Python config to read it, so a config file is code: whoever could put one
where a run loads it would run anything as the service. The configs a run loads are the
registry's (written by training, which dumps plain values; or checked by `register-model`) and
the product's own, and each is checked here before mmengine reads it: assignments of literals,
`dict(...)`, names assigned above and arithmetic, with `_base_` naming only configs shipped in
the mmdet package (`mmdet::...`). That is how mmengine dumps configs and how MMDetection's own
are written; imports, attribute access, other calls and `custom_imports` are refused.
"""

import ast
from pathlib import Path

from ..errors import InputError

PACKAGE_BASE_PREFIX = "mmdet::"
SAFE_NAMES = {"True", "False", "None"}
SAFE_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub)


class UnsafeConfig(InputError):
    """A config file that is a program rather than data."""


def _refuse(path: Path, node: ast.AST, what: str) -> UnsafeConfig:
    return UnsafeConfig(
        f"config {path}, line {getattr(node, 'lineno', '?')}: {what}. Configs are executed by "
        "mmengine, so only plain values are taken (dict(...), lists, numbers, strings, names "
        "assigned above, `_base_` from mmdet::); merge the config into one such file, e.g. "
        "with mmengine's Config.fromfile(...).dump(...) where you trust it"
    )


def _check_value(path: Path, node: ast.AST, assigned: set[str]) -> None:
    if isinstance(node, ast.Constant):
        return
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        for element in node.elts:
            _check_value(path, element, assigned)
    elif isinstance(node, ast.Dict):
        for key in node.keys:
            if key is None:
                raise _refuse(path, node, "`**` in a dict")
            _check_value(path, key, assigned)
        for value in node.values:
            _check_value(path, value, assigned)
    elif isinstance(node, ast.Name):
        if node.id not in assigned | SAFE_NAMES:
            raise _refuse(path, node, f"the name `{node.id}` is not assigned above")
    elif isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id == "dict") or node.args:
            raise _refuse(path, node, "a call other than dict(key=value, ...)")
        for keyword in node.keywords:
            if keyword.arg is None:
                raise _refuse(path, node, "`**` in dict(...)")
            if keyword.arg == "custom_imports":
                raise _refuse(path, node, "`custom_imports` imports code")
            _check_value(path, keyword.value, assigned)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, SAFE_OPERATORS):
        _check_value(path, node.left, assigned)
        _check_value(path, node.right, assigned)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, SAFE_OPERATORS):
        _check_value(path, node.operand, assigned)
    else:
        raise _refuse(path, node, f"a {type(node).__name__} expression")


def _check_bases(path: Path, node: ast.AST) -> None:
    bases = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
    for base in bases:
        if not (
            isinstance(base, ast.Constant)
            and isinstance(base.value, str)
            and base.value.startswith(PACKAGE_BASE_PREFIX)
        ):
            raise _refuse(path, base, "`_base_` names a file that is not one of mmdet's configs")


def check_config(path: str | Path) -> Path:
    """`path`, once its config has been found to be data (see the module's docstring); raises
    UnsafeConfig (an InputError) naming the line that is not."""
    path = Path(path)
    if path.suffix != ".py":
        raise UnsafeConfig(f"config {path} is not a Python config (.py) as mmengine dumps them")
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError) as error:
        raise UnsafeConfig(f"cannot read config {path}: {error}") from error
    assigned: set[str] = set()
    for statement in tree.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring
        if not (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
        ):
            raise _refuse(path, statement, f"a {type(statement).__name__} statement")
        name = statement.targets[0].id
        if name == "custom_imports":
            raise _refuse(path, statement, "`custom_imports` imports code")
        if name == "_base_":
            _check_bases(path, statement.value)
        else:
            _check_value(path, statement.value, assigned)
        assigned.add(name)
    return path
