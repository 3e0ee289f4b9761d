"""Prepared convolutions: ``plan_conv2d`` does once what every call of a layer with fixed
weights would otherwise repeat (NNPACK's "precompute", cuDNN's descriptors).

A plan fixes the weights, the problem and the algorithm, and keeps the weights in the
form that algorithm computes with: Winograd's transformed kernel and im2col's packed GEMM
panels (``_C.prepare_weights``), laid out for the instruction set in use (a plan
re-prepares itself after ``_C.set_isa``). It keeps its own workspace, per Python thread.

    plan = fastconv.plan_conv2d(w, (1, 64, 56, 56), padding=1)
    y = plan(x)            # x of shape (N, 64, 56, 56); any batch size N

``auto`` in a plan picks by the rules ``conv2d`` uses (for prepared weights), from the
weights' finiteness (checked once, here) and within the workspace cap; a call whose input
holds NaN or Inf runs an algorithm that gives the reference's answer instead (from the
plan's copy of the weights).
"""
from __future__ import annotations

import threading

import numpy as np

from . import _C, algorithms
from ._args import as_int, check_flip, conv_problem
from ._arrays import DTYPE_NAMES, HOST, backend_for, same_dtype
from .functional import _run_conv


class ConvPlan:
    """A conv2d with fixed weights, problem and algorithm; call it with the input."""

    def __init__(self, backend, w_arr, b_arr, input_shape, stride, padding, dilation, groups, algorithm,
                 workspace_limit):
        self._backend = backend  # the weights' device: every call runs there
        self._w, self._b = w_arr, b_arr
        self._args = (stride, padding, dilation, groups)
        self.dtype = w_arr.dtype
        params, pads = conv_problem(input_shape, w_arr.shape, stride, padding, dilation, groups, "plan_conv2d")
        self.input_shape = tuple(input_shape)
        self.output_shape = (params.N, params.K, params.P, params.Q)
        self._weights_finite = backend.all_finite(w_arr) and (b_arr is None or backend.all_finite(b_arr))
        self._local = threading.local()
        self._prepared = None
        name = algorithms.resolve(algorithm, params, self.dtype, device=backend.device)
        if name == "autotune" or (name == "auto" and algorithms.get_autotune()):
            name = self._tune(params, pads, workspace_limit)
        elif name == "auto":
            name = algorithms.choose(params, self.dtype, inputs_finite=self._weights_finite,
                                     workspace_limit=workspace_limit, prepared=True, device=backend.device)
        self.algorithm = name
        self._prepare(params)

    # ---- weights ---------------------------------------------------------------------

    def _prepare(self, params):
        """Transform/pack the weights for self.algorithm at the active ISA."""
        self._isa = _C.get_isa()
        device = self._backend.device
        if not algorithms.prepares(self.algorithm, device):
            self._prepared = None
            return
        nbytes = _C.prepared_bytes(self.algorithm, params, DTYPE_NAMES[self.dtype], device)
        prepared = self._backend.empty(nbytes // self.dtype.itemsize, self.dtype)
        self._backend.prepare(self.algorithm, params, self._w, prepared)
        self._prepared = prepared

    @property
    def prepared_bytes(self):
        """Bytes of the weights in the prepared form (0: the kernel uses them as they are)."""
        return 0 if self._prepared is None else self._prepared.nbytes

    @property
    def workspace_bytes(self):
        """Scratch bytes one call at the planned input shape needs (current thread count)."""
        params, _ = self._problem(self.input_shape)
        return algorithms.workspace_bytes(self.algorithm, params, self.dtype, prepared=True,
                                          device=self._backend.device)

    # ---- calls -----------------------------------------------------------------------

    def _problem(self, x_shape):
        return conv_problem(tuple(x_shape), self._w.shape, *self._args, "plan_conv2d")

    def _call_problem(self, x_shape):
        """(params, pads, workspace bytes, output shape, ISA) of a call on x_shape, kept for the
        last shape, thread count, ISA and algorithm (the workspace depends on all four): a model
        calls a plan with the same shape every time, and each pybind11 attribute read costs
        about a microsecond."""
        isa = _C.get_isa()
        key = (x_shape, _C.get_num_threads(), isa, self.algorithm)
        last = getattr(self._local, "call", None)
        if last is None or last[0] != key:
            params, pads = self._problem(x_shape)
            last = self._local.call = (key, params, pads,
                                       algorithms.workspace_bytes(self.algorithm, params, self.dtype, prepared=True,
                                                                  device=self._backend.device),
                                       (params.N, params.K, params.P, params.Q), isa)
        return last[1:]

    def _workspace(self, nbytes):
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.nbytes < nbytes:
            buf = self._local.buf = self._backend.empty(nbytes, np.uint8)
        return buf

    def __call__(self, x, *, out=None):
        """y = conv2d(x, weight, bias, ...) for x of shape (N, C, H, W) with the planned
        C, H, W (any N). ``out``: optional NumPy array to write y into."""
        backend, kind = backend_for([("input", x)])
        if backend is not self._backend:
            raise TypeError(f"plan was made for {self._backend.device} arrays, got input on {backend.device}")
        return backend.wrap(self.run_array(backend.array(x, "input"), out), kind)

    def run_array(self, x_arr, out=None):
        """``self(x)`` for a C-contiguous NumPy array x_arr; returns a NumPy array (what
        fastconv.torch's layers call, with the tensor's NumPy view)."""
        if x_arr.dtype != self.dtype:
            raise TypeError(f"plan was made for {self.dtype}, got input of dtype {x_arr.dtype}")
        if x_arr.ndim != 4 or x_arr.shape[1:] != self.input_shape[1:]:
            raise ValueError(f"plan was made for inputs (N, {', '.join(map(str, self.input_shape[1:]))}), "
                             f"got shape {x_arr.shape}")
        params, pads, ws_bytes, shape, isa = self._call_problem(x_arr.shape)
        backend = self._backend
        if not algorithms.is_exact_on_nonfinite(self.algorithm) and not backend.all_finite(x_arr):
            exact = algorithms.choose(params, self.dtype, inputs_finite=False, device=backend.device)
            return _run_conv(x_arr, self._w, self._b, params, pads, exact, out, backend)
        y = backend.check_out(out, shape, self.dtype) if out is not None else backend.empty(shape, self.dtype)
        if shape[0] == 0:
            return y
        if self._prepared is None:
            return _run_conv(x_arr, self._w, self._b, params, pads, self.algorithm, y, backend)
        if isa != self._isa:  # packed panels are laid out per ISA
            self._prepare(params)
        ws = self._workspace(ws_bytes) if ws_bytes else None
        tensors = {"x": x_arr, "w": self._prepared, "bias": self._b, "y": y}
        backend.run("conv2d_forward", self.algorithm, params, tensors, ws, prepared=True)
        return y

    def _tune(self, params, pads, workspace_limit):
        """Time every candidate as a plan runs it, on random input of the planned shape."""
        x = np.random.default_rng(0).standard_normal(self.input_shape).astype(self.dtype)
        y = HOST.empty(self.output_shape, self.dtype)  # aligned, as a call's output is
        trials = {}

        def run(name):
            if name not in trials:
                self.algorithm = name
                self._prepare(params)
                trials[name] = self._prepared
            self.algorithm, self._prepared = name, trials[name]
            self(x, out=y)

        before = algorithms.get_workspace_limit()
        if workspace_limit is not None:
            algorithms.set_workspace_limit(workspace_limit)
        try:
            return algorithms.tuned(params, self.dtype, run, prepared=True, device=self._backend.device)
        finally:
            algorithms.set_workspace_limit(before)

    # ---- introspection ---------------------------------------------------------------

    def __repr__(self):
        stride, padding, dilation, groups = self._args
        return (f"ConvPlan(algorithm={self.algorithm!r}, input_shape={self.input_shape}, "
                f"weight_shape={self._w.shape}, output_shape={self.output_shape}, stride={stride!r}, "
                f"padding={padding!r}, dilation={dilation!r}, groups={groups}, dtype={self.dtype}, "
                f"prepared_bytes={self.prepared_bytes}, workspace_bytes={self.workspace_bytes})")

    def explain(self):
        """A dict: algorithm, shapes, prepared weight bytes and workspace bytes."""
        return {"algorithm": self.algorithm, "input_shape": self.input_shape,
                "weight_shape": tuple(self._w.shape), "output_shape": self.output_shape,
                "dtype": self.dtype.name, "prepared_bytes": self.prepared_bytes,
                "workspace_bytes": self.workspace_bytes}


def plan_conv2d(weight, input_shape, stride=1, padding=0, dilation=1, groups=1, *, bias=None,
                flip=False, algorithm="auto", workspace_limit=None):
    """A prepared conv2d for repeated calls with the same weights (inference).

    ``weight`` (K, C/groups, R, S) and ``bias`` (K,) are copied into the plan; later changes
    to the caller's arrays do not reach it. ``input_shape`` (N, C, H, W) fixes C, H, W
    (calls may use any N) and is the shape ``auto`` decides for. Arguments as
    ``conv2d``; ``workspace_limit`` (bytes) caps the scratch memory ``auto`` may pick an
    algorithm for (default: ``set_workspace_limit``'s global cap). Returns a ``ConvPlan``:
    ``plan(x)`` gives y; ``plan.algorithm``, ``plan.prepared_bytes``,
    ``plan.workspace_bytes`` and ``plan.explain()`` say what it holds.
    """
    backend, _ = backend_for([("weight", weight), ("bias", bias)])
    w_arr = backend.array(weight, "weight")
    b_arr = backend.array(bias, "bias") if bias is not None else None
    same_dtype([("weight", w_arr), ("bias", b_arr)])
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 4:
        raise ValueError(f"plan_conv2d: input_shape must be (N, C, H, W), got {input_shape!r}")
    input_shape = tuple(as_int(v, "input_shape") for v in input_shape)
    if input_shape[0] < 0:
        raise ValueError(f"plan_conv2d: input_shape has a negative batch size: {input_shape}")
    flip = check_flip("plan_conv2d", flip)
    if workspace_limit is not None and (isinstance(workspace_limit, bool)
                                        or not isinstance(workspace_limit, (int, np.integer))
                                        or workspace_limit < 0):
        raise ValueError(f"plan_conv2d: workspace_limit must be a non-negative int of bytes, got {workspace_limit!r}")
    if w_arr.ndim != 4:
        raise ValueError(f"plan_conv2d: weight must be 4-D (K, C/groups, R, S), got shape {w_arr.shape}")
    w_arr = backend.flip_kernel(w_arr) if flip else w_arr.copy()  # the plan's own copy
    if b_arr is not None:
        if b_arr.shape != (w_arr.shape[0],):
            raise ValueError(f"plan_conv2d: bias must have shape ({w_arr.shape[0]},), got {b_arr.shape}")
        b_arr = b_arr.copy()
    return ConvPlan(backend, w_arr, b_arr, input_shape, stride, padding, dilation, groups, algorithm, workspace_limit)
