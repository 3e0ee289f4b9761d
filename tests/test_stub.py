"""python/fastconv/_C.pyi against the compiled module, beyond mypy's stubtest (which .ci/run runs).

pybind11's functions have no signature Python can inspect, so stubtest only checks that each
name exists on both sides. Here every function and method of the stub must have the parameters
pybind11 writes in the first line of its docstring (``name(a: T, b: T = default) -> R``): the
same names in the same order, the same ones with defaults, and the same default values.
"""
import ast
import pathlib

import pytest

import fastconv
from fastconv import _C

STUB = pathlib.Path(fastconv.__file__).with_name("_C.pyi")


def _stub_functions():
    """{qualified name: ast.FunctionDef} of the stub's functions and methods."""
    out = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = node
        elif isinstance(node, ast.ClassDef):
            out.update({f"{node.name}.{f.name}": f for f in node.body if isinstance(f, ast.FunctionDef)})
    return out


def _stub_params(fn):
    """[(name, default source or None)] of a stub function, positional then keyword-only."""
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + [ast.unparse(d) for d in a.defaults]
    kwonly = [None if d is None else ast.unparse(d) for d in a.kw_defaults]
    return list(zip([p.arg for p in positional], defaults)) + list(zip([p.arg for p in a.kwonlyargs], kwonly))


def _split_top_level(text):
    """Split at the commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _runtime_params(obj):
    """[(name, default source or None)] from pybind11's docstring signature line."""
    line = (obj.__doc__ or "").splitlines()[0]
    inside = line[line.index("(") + 1:line.rindex(") ->")]
    params = []
    for part in _split_top_level(inside):
        if part in ("*", "/"):
            continue
        name_and_type, _, default = part.partition(" = ")
        params.append((name_and_type.split(":")[0].strip(), default or None))
    return params


def _runtime(qualname):
    obj = _C
    for attr in qualname.split("."):
        obj = getattr(obj, attr, None)
    return obj


FUNCTIONS = sorted((name, fn) for name, fn in _stub_functions().items()
                   if callable(_runtime(name)) and "Overloaded function" not in (_runtime(name).__doc__ or ""))


def _same_default(stub, runtime):
    """Defaults as the stub writes them (Python source) and as pybind11 does (repr)."""
    if stub is None or runtime is None:
        return stub is runtime
    try:
        return ast.literal_eval(stub) == ast.literal_eval(runtime)
    except ValueError:  # a name, e.g. None written as None on both sides, or a C++ value
        return stub == runtime


def test_stub_has_functions():
    assert len(FUNCTIONS) >= 10, "the stub's functions were not found"


@pytest.mark.parametrize("name, fn", FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_parameters_match_the_module(name, fn):
    stub, runtime = _stub_params(fn), _runtime_params(_runtime(name))
    assert [n for n, _ in stub] == [n for n, _ in runtime], f"{name}: stub {stub} vs module {runtime}"
    for (n, s), (_, r) in zip(stub, runtime):
        assert _same_default(s, r), f"{name}: parameter {n} defaults to {s} in the stub, {r} in the module"
