"""The architecture, enforced: the backend seam and imports that go one way (see DEVELOPERS.md)."""

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "tinyllm"

# Host-side code may use NumPy directly; everything else goes through tinyllm.backend.
NUMPY_ALLOWED = (
    "backend.py",
    "serialization.py",
    "cli.py",
    "demo.py",  # `python -m tinyllm.demo`: a command-line entry point like cli.py
    "tokenizers/",
    "data/",
    "metrics.py",  # evaluation metrics on the host, beside the data
    "bench/",
    "course/",
    "train/",
)

# module prefix -> packages it must never import
FORBIDDEN = {
    "tinyllm.backend": ["tinyllm.autograd", "tinyllm.tensor", "tinyllm.ops", "tinyllm.functional",
                        "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.blas": ["tinyllm.autograd", "tinyllm.tensor", "tinyllm.ops", "tinyllm.functional",
                     "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.workers": ["tinyllm.backend", "tinyllm.autograd", "tinyllm.tensor", "tinyllm.ops",
                        "tinyllm.functional", "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.ids": ["tinyllm.autograd", "tinyllm.tensor", "tinyllm.ops", "tinyllm.functional",
                    "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.autograd": ["tinyllm.functional", "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.tensor": ["tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.tensor_methods": ["tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.tensor_operators": ["tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.ops": ["tinyllm.functional", "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.elementwise": ["tinyllm.functional", "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.reductions": ["tinyllm.functional", "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.shape_ops": ["tinyllm.functional", "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.activations": ["tinyllm.functional", "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.functional": ["tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.attention": ["tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.gradcheck": ["tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.rope": ["tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.rms_norm": ["tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.swiglu": ["tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.repeat_kv": ["tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.dpo": ["tinyllm.nn", "tinyllm.optim", "tinyllm.models", "tinyllm.train"],
    "tinyllm.activation_checkpoint": ["tinyllm.functional", "tinyllm.nn", "tinyllm.optim",
                                      "tinyllm.models"],
    "tinyllm.precision": ["tinyllm.optim", "tinyllm.models", "tinyllm.train"],
    "tinyllm.quant": ["tinyllm.optim", "tinyllm.models", "tinyllm.train"],
    "tinyllm.nn": ["tinyllm.models", "tinyllm.optim", "tinyllm.train"],
    "tinyllm.optim": ["tinyllm.models", "tinyllm.train"],
    "tinyllm.tokenizers": ["tinyllm.autograd", "tinyllm.tensor", "tinyllm.ops",
                           "tinyllm.functional", "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.data": ["tinyllm.autograd", "tinyllm.tensor", "tinyllm.ops", "tinyllm.functional",
                     "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.models": ["tinyllm.train", "tinyllm.cli", "tinyllm.bench"],
    "tinyllm.distributed": ["tinyllm.autograd", "tinyllm.tensor", "tinyllm.ops",
                            "tinyllm.functional", "tinyllm.nn", "tinyllm.optim", "tinyllm.models",
                            "tinyllm.train"],
    "tinyllm.metrics": ["tinyllm.autograd", "tinyllm.tensor", "tinyllm.ops", "tinyllm.functional",
                        "tinyllm.nn", "tinyllm.optim", "tinyllm.models"],
    "tinyllm.distill": ["tinyllm.nn", "tinyllm.optim", "tinyllm.models", "tinyllm.train"],
    "tinyllm.prune": ["tinyllm.models", "tinyllm.optim", "tinyllm.train", "tinyllm.cli"],
}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        name = "tinyllm." + rel[:-3].replace("/", ".")
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
            package = name
        else:
            package = name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        tree.package = package  # for resolving relative imports
        yield rel, name, tree


def _imports(name, tree):
    """Absolute names of every module imported anywhere in ``tree`` (also inside functions)."""
    package = getattr(tree, "package", name.rsplit(".", 1)[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, node.lineno
            for alias in node.names:  # `from tinyllm import nn` imports tinyllm.nn
                yield f"{mod}.{alias.name}", node.lineno


MODULES = list(_modules())

# The engine, top to bottom, as DEVELOPERS.md lists it: each module imports only modules above it.
# autograd never sees the Tensor class (it works on the node protocol of autograd.Node), the
# Functions never see it either, and Tensor's methods call all of them, so tensor comes last.
ENGINE_LAYERS = [
    "tinyllm.atomic",
    "tinyllm.backend",
    "tinyllm.autograd",
    "tinyllm.ops",
    "tinyllm.elementwise",
    "tinyllm.reductions",
    "tinyllm.shape_ops",
    "tinyllm.activations",
    "tinyllm.attention",
    "tinyllm.functional",
    "tinyllm.tensor_methods",
    "tinyllm.tensor_operators",
    "tinyllm.tensor",
    "tinyllm.gradcheck",
    "tinyllm.rope",
    "tinyllm.rms_norm",
    "tinyllm.swiglu",
    "tinyllm.repeat_kv",
]


def test_the_package_was_found():
    names = [n for _, n, _ in MODULES]
    assert "tinyllm.backend" in names and "tinyllm.tensor" in names


def test_only_the_backend_and_host_side_code_import_numpy():
    offenders = []
    for rel, name, tree in MODULES:
        if rel.startswith(NUMPY_ALLOWED):
            continue
        for mod, line in _imports(name, tree):
            if mod == "numpy" or mod.startswith("numpy."):
                offenders.append(f"tinyllm/{rel}:{line} imports {mod}")
    assert not offenders, ("engine and model code must reach NumPy through tinyllm.backend "
                           "(xp = get_array_module(a)):\n" + "\n".join(offenders))


def test_layers_import_downward_only():
    offenders = []
    for rel, name, tree in MODULES:
        for prefix, banned in FORBIDDEN.items():
            if name != prefix and not name.startswith(prefix + "."):
                continue
            for mod, line in _imports(name, tree):
                for b in banned:
                    if mod == b or mod.startswith(b + "."):
                        offenders.append(f"tinyllm/{rel}:{line} ({name}) imports {mod}")
    assert not offenders, "imports must go downward (DEVELOPERS.md):\n" + "\n".join(offenders)


def _engine_imports(tree, top_level_only=False):
    """(engine module, line, inside a function) for each engine module that ``tree`` imports."""
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for mod, line in _imports("tinyllm.x", ast.Module(body=[node], type_ignores=[])):
            if mod in ENGINE_LAYERS:
                yield mod, line, id(node) in inner


def test_the_engine_layers_are_those_of_developers_md():
    text = (PKG.parent / "DEVELOPERS.md").read_text(encoding="utf-8")
    listed = [m.group(1).replace("/", ".") for m in re.finditer(r"^(tinyllm/\w+)\.py\s", text, re.M)]
    order = [name for name in listed if name in ENGINE_LAYERS]
    assert order == ENGINE_LAYERS, ("DEVELOPERS.md's layer list and ENGINE_LAYERS disagree:\n"
                                    f"{order}\n{ENGINE_LAYERS}")
    found = {n for _, n, _ in MODULES}
    missing = [m for m in ENGINE_LAYERS if m not in found]
    assert not missing, f"ENGINE_LAYERS names modules that do not exist: {missing}"


def test_the_engine_imports_only_from_layers_above():
    offenders = []
    for rel, name, tree in MODULES:
        if name not in ENGINE_LAYERS:
            continue
        rank = ENGINE_LAYERS.index(name)
        for mod, line, in_function in _engine_imports(tree):
            if ENGINE_LAYERS.index(mod) >= rank:
                offenders.append(f"tinyllm/{rel}:{line} imports {mod}, which is not above it")
            elif in_function:
                offenders.append(f"tinyllm/{rel}:{line} imports {mod} inside a function (import "
                                 "at the top: a late import hides a cycle)")
    assert not offenders, ("the engine's layers import downward only, at the top of the module "
                           "(DEVELOPERS.md):\n" + "\n".join(offenders))


def test_nothing_imports_the_course():
    offenders = []
    for rel, name, tree in MODULES:
        if name.startswith("tinyllm.course"):
            continue  # the course may import its own modules
        for mod, line in _imports(name, tree):
            if mod == "tinyllm.course" or mod.startswith("tinyllm.course."):
                offenders.append(f"tinyllm/{rel}:{line} imports {mod}")
    assert not offenders, "nothing in the package imports tinyllm.course:\n" + "\n".join(offenders)


@pytest.mark.parametrize("source,expected", [
    ("import numpy as np", "numpy"),
    ("from numpy import linalg", "numpy"),
    ("from . import ops", "tinyllm.ops"),
    ("from .nn import layers", "tinyllm.nn"),
])
def test_the_import_scanner_sees(source, expected):
    found = [m for m, _ in _imports("tinyllm.tensor", ast.parse(source))]
    assert expected in found, found


def test_the_engine_scanner_sees_imports_inside_functions():
    tree = ast.parse("from tinyllm import ops\n\ndef f():\n    from tinyllm.tensor import Tensor\n")
    assert sorted(_engine_imports(tree)) == [("tinyllm.ops", 1, False), ("tinyllm.tensor", 4, True)]


def test_importing_tinyllm_changes_no_process_settings(monkeypatch):
    """glibc malloc tuning is an explicit call (trainer, CLI, bench), not an import side effect."""
    tree = ast.parse((PKG / "backend.py").read_text(encoding="utf-8"))
    calls = [n.value.func.id for n in tree.body if isinstance(n, ast.Expr)
             and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)]
    assert not calls, f"tinyllm/backend.py calls {calls} at import"
    from tinyllm import backend

    monkeypatch.setenv("TINYLLM_MALLOPT", "0")
    assert backend.tune_malloc() is False
