"""Every framework's engine keeps the contract the generated package writes down (contract.py), read from source.

No framework is installed for this: the fast tier catches an engine drifting from the contract (a method or
parameter renamed, a type changed) for all of them. The generated tests/test_engine_contract.py checks the
same with the framework loaded, types resolved.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from matrix import FRAMEWORKS, REPO

CONTRACT = REPO / "template" / "src" / "{{package_name}}" / "contract.py"


def _source(node: ast.expr | None) -> str | None:
    return None if node is None else ast.unparse(node)


def _signature(function: ast.FunctionDef, *, unbound_self: bool = False) -> list[tuple[str | None, ...]]:
    """Each parameter's kind, name, annotation and default (as source), then the return annotation."""
    arguments = function.args
    positional = [*arguments.posonlyargs, *arguments.args]
    defaults = [None] * (len(positional) - len(arguments.defaults)) + arguments.defaults
    rows: list[tuple[str | None, ...]] = [
        ("positional", a.arg, _source(a.annotation), _source(d)) for a, d in zip(positional, defaults, strict=True)
    ]
    if arguments.vararg:
        rows.append(("*args", arguments.vararg.arg, _source(arguments.vararg.annotation)))
    rows += [
        ("keyword", a.arg, _source(a.annotation), _source(d))
        for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
    ]
    if arguments.kwarg:
        rows.append(("**kwargs", arguments.kwarg.arg, _source(arguments.kwarg.annotation)))
    rows.append(("return", _source(function.returns)))
    return rows[1:] if unbound_self else rows


def _functions(body: list[ast.stmt]) -> dict[str, ast.FunctionDef]:
    return {node.name: node for node in body if isinstance(node, ast.FunctionDef)}


def _class(module: ast.Module, name: str) -> ast.ClassDef:
    found = [node for node in module.body if isinstance(node, ast.ClassDef) and node.name == name]
    assert found, f"no class {name}"
    return found[0]


def _assigned(module: ast.Module) -> set[str]:
    """Module-level names set by `NAME = ...`."""
    assignments = [node for node in module.body if isinstance(node, ast.Assign)]
    return {target.id for node in assignments for target in node.targets if isinstance(target, ast.Name)}


CONTRACT_TREE = ast.parse(CONTRACT.read_text())
ENGINE_PROTOCOL = _class(CONTRACT_TREE, "Engine")
TRAINER_PROTOCOL = _functions(_class(CONTRACT_TREE, "Trainer").body)


@pytest.fixture(params=sorted(FRAMEWORKS), scope="module")
def engine(request: pytest.FixtureRequest) -> ast.Module:
    return ast.parse((REPO / "frameworks" / request.param / "engine.py").read_text())


def test_the_contract_names_what_the_package_calls() -> None:
    assert set(TRAINER_PROTOCOL) >= {"__init__", "train_epoch", "evaluate", "state", "load_state", "save_model"}
    assert set(_functions(ENGINE_PROTOCOL.body)) == {"seed_framework", "framework_versions", "start_world"}


def test_engine_module_keeps_the_contract(engine: ast.Module) -> None:
    functions = _functions(engine.body)
    for name, protocol in _functions(ENGINE_PROTOCOL.body).items():
        assert name in functions, f"engine.py has no function {name}"
        assert _signature(functions[name]) == _signature(protocol, unbound_self=True), name
    members = {node.target.id for node in ENGINE_PROTOCOL.body if isinstance(node, ast.AnnAssign)}
    assert members <= _assigned(engine), f"engine.py does not set {sorted(members - _assigned(engine))}"


def test_engine_trainer_keeps_the_contract(engine: ast.Module) -> None:
    methods = _functions(_class(engine, "Trainer").body)
    for name, protocol in TRAINER_PROTOCOL.items():
        assert name in methods, f"engine.py's Trainer has no method {name}"
        assert _signature(methods[name]) == _signature(protocol), name


def test_the_signature_sees_a_renamed_parameter_and_a_changed_type() -> None:
    (original,) = ast.parse("def f(self, split: Split) -> dict[str, float]: ...").body
    for changed in ("def f(self, data: Split) -> dict[str, float]: ...", "def f(self, split: Split) -> dict: ..."):
        (function,) = ast.parse(changed).body
        assert isinstance(original, ast.FunctionDef) and isinstance(function, ast.FunctionDef)
        assert _signature(function) != _signature(original)


def test_every_framework_has_an_engine() -> None:
    assert {path.parent.name for path in Path(REPO / "frameworks").glob("*/engine.py")} == set(FRAMEWORKS)
