# test_torch_compile.py: a model converted by fastconv.torch.convert runs under
# torch.compile(fullgraph=True) with no graph break, and gives eager torch's outputs and
# gradients: with the aot_eager backend (the fake implementations and autograd formulas of the
# custom ops; fast), and once with inductor (a real C++ compile; slower, forward only).
import copy

import pytest

torch = pytest.importorskip("torch")
dynamo = pytest.importorskip("torch._dynamo")
pytestmark = pytest.mark.slow  # graph capture and compiles (inductor: a C++ compiler process)
from torch import nn  # noqa: E402

import fastconv.torch as ft  # noqa: E402


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(8, 8, 3, padding="same", padding_mode="reflect", groups=2), nn.AvgPool2d(2),
        nn.LPPool2d(2, 2), nn.AdaptiveMaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Unflatten(1, (1, 8)), nn.Conv1d(1, 2, 3, padding=1), nn.MaxPool1d(2), nn.AvgPool1d(2), nn.Flatten(),
        nn.Linear(4, 3))


def _close(got, want, tol=1e-5):
    assert float((got.detach() - want.detach()).abs().max()) <= tol * max(float(want.detach().abs().max()), 1e-6)


def test_converted_model_compiles_without_graph_breaks():
    model = ft.convert(cnn())
    x = torch.randn(2, 3, 17, 16)
    explanation = dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_aot_eager_matches_torch_outputs_and_gradients():
    theirs = cnn()
    ours = ft.convert(copy.deepcopy(theirs))
    dynamo.reset()
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 17, 16)
    y, ty = compiled(x), theirs(x)
    _close(y, ty)
    y.square().sum().backward()
    ty.square().sum().backward()
    for p, tp in zip(ours.parameters(), theirs.parameters()):
        _close(p.grad, tp.grad, 1e-4)
    with torch.no_grad():   # the inference path of a compiled model runs the ops too (no plan)
        _close(compiled(x), theirs(x))
    assert all(not getattr(m, "_plans", None) for m in ours.modules())


def test_compiled_inductor_forward():
    theirs = cnn()
    ours = ft.convert(copy.deepcopy(theirs))
    dynamo.reset()
    compiled = torch.compile(ours, fullgraph=True)
    x = torch.randn(2, 3, 17, 16)
    with torch.no_grad():
        _close(compiled(x), theirs(x))
