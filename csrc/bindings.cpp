// bindings.cpp: the only file that includes pybind11. It turns the caller's arrays into
// plain tensor descriptors (tensor.h), releases the GIL and calls the registry's boundary
// (run, prepare, workspace_bytes, ...), which checks everything again. No algorithm logic
// and no device setup live here; the test hooks at the end (GEMM, tile transforms) call
// CPU code directly.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <complex>
#include <cstdint>
#include <vector>

#include "cpu/backend.h"
#include "cpu/gemm.h"
#include "cpu/kernels.h"
#include "cpu_features.h"
#include "math/winograd.h"
#include "registry.h"
#if FASTCONV_WITH_CUDA
#include "cuda/backend.h"
#include "cuda/gemm.h"
#include "cuda/kernels.h"
#endif
#if FASTCONV_EMULATED_CUDA
#include "cuda/emu_selftest.h"
namespace fastconv::emu {  // the emulator's controls (cuda/emu/emu.h), without its CUDA names
void set_order(const std::string& name);
std::string order();
std::uint64_t fiber_switches();
}  // namespace fastconv::emu
#endif

#ifndef FASTCONV_WITH_CUDA
#define FASTCONV_WITH_CUDA 0
#endif
#ifndef FASTCONV_EMULATED_CUDA
#define FASTCONV_EMULATED_CUDA 0
#endif

// The module's name: _C, or _cuda_emu for the tests' build whose CUDA device is the emulator.
#ifndef FASTCONV_MODULE
#define FASTCONV_MODULE _C
#endif

namespace py = pybind11;
using namespace fastconv;

namespace {

#ifndef FASTCONV_VERSION
#define FASTCONV_VERSION "0.0.0"
#endif
#ifndef FASTCONV_SANITIZERS
#define FASTCONV_SANITIZERS ""
#endif

// Utility bindings (GEMM, weight transpose, peak) run CPU code directly: the CPU backend
// sets the calling thread's team size first, as the registry does for kernels.
void enter_cpu() { cpu::enter(ExecContext{}); }

DType dtype_of(const py::array& a, const char* name) {
  if (a.dtype().is(py::dtype::of<float>())) return DType::f32;
  if (a.dtype().is(py::dtype::of<double>())) return DType::f64;
  throw dtype_error(str_cat("fastconv: ", name, " has dtype ", std::string(py::str(a.dtype())),
                            "; supported: float32, float64"));
}

// ---- descriptors: the caller's arrays as plain TensorDesc -------------------------------------
// A NumPy array is a CPU tensor described by itself; memory of other devices arrives as a
// _C.Tensor that Python's array adapter made (pointer, dtype, shape, strides, device).
DType element_type(const py::dtype& dt, const char* name) {
  // NumPy's type numbers, looked up once: making the dtype objects for every comparison cost
  // a measurable part of a small call.
  static const int f32 = py::dtype::of<float>().num(), f64 = py::dtype::of<double>().num(),
                   i64 = py::dtype::of<std::int64_t>().num(), u8 = py::dtype::of<std::uint8_t>().num();
  const int num = dt.num();
  if (num == f32) return DType::f32;
  if (num == f64) return DType::f64;
  if (num == i64) return DType::i64;
  if (num == u8) return DType::u8;
  throw dtype_error(str_cat("fastconv: ", name, " has dtype ", std::string(py::str(dt)),
                            "; supported: float32, float64 (int64 indices, uint8 workspaces)"));
}

TensorDesc desc_of(py::handle h, const char* name) {
  TensorDesc d;
  if (!h || h.is_none()) return d;
  if (!py::isinstance<py::array>(h)) {  // NumPy's own check first: arrays are the common case
    if (py::isinstance<TensorDesc>(h)) {
      d = h.cast<TensorDesc>();
      d.present = true;
      return d;
    }
    throw py::type_error(str_cat("fastconv: ", name, " must be a numpy.ndarray or a fastconv._C.Tensor, got ",
                                 std::string(py::str(py::type::handle_of(h).attr("__name__")))));
  }
  auto a = py::reinterpret_borrow<py::array>(h);
  d.dtype = element_type(a.dtype(), name);
  FC_CHECK(a.ndim() <= TensorDesc::kMaxDims, name, " has ", a.ndim(), " dimensions, at most ",
           TensorDesc::kMaxDims, " are supported");
  d.ndim = int(a.ndim());
  const index_t item = a.itemsize();
  for (int i = 0; i < d.ndim; ++i) {
    d.shape[i] = a.shape(i);
    // A byte stride that is no multiple of the element size cannot be described in elements:
    // mark it so that contiguous() fails (unless the dimension has one element).
    d.strides[i] = a.strides(i) % item == 0 ? a.strides(i) / item : -1;
  }
  d.data = const_cast<void*>(a.data());
  d.writable = a.writeable();
  d.present = true;
  return d;
}

TensorArgs tensor_args(const py::dict& tensors) {
  TensorArgs t;
  for (auto item : tensors) {
    FC_CHECK(PyUnicode_Check(item.first.ptr()), "tensors must be keyed by slot names (str)");
    const std::string_view key = PyUnicode_AsUTF8(item.first.ptr());
    TensorDesc* slot = key == "x"           ? &t.x
                       : key == "w"         ? &t.w
                       : key == "bias"      ? &t.bias
                       : key == "y"         ? &t.y
                       : key == "indices"   ? &t.indices
                       : key == "grad_y"    ? &t.grad_y
                       : key == "grad_x"    ? &t.grad_x
                       : key == "grad_w"    ? &t.grad_w
                       : key == "grad_bias" ? &t.grad_bias
                                            : nullptr;
    FC_CHECK(slot, "unknown tensor '", key,
             "'; expected x, w, bias, y, indices, grad_y, grad_x, grad_w, grad_bias");
    *slot = desc_of(item.second, key.data());  // PyUnicode_AsUTF8: NUL-terminated
  }
  return t;
}

ExecContext context(const std::string& device, int device_index, std::uintptr_t stream) {
  ExecContext ctx;
  ctx.device = device_from_name(device);
  FC_CHECK(device_index >= 0, "device_index must be >= 0 (got ", device_index, ")");
  ctx.device_index = device_index;
  ctx.stream = reinterpret_cast<void*>(stream);
  return ctx;
}

bool is_tiled_op(Op op) {
  return op == Op::tiled_conv2d_forward || op == Op::tiled_conv2d_backward_data ||
         op == Op::tiled_conv2d_backward_weight;
}

// A convolution problem for the queries (supports, workspace_bytes, ...), which name the dtype.
Problem conv_problem(const std::string& op, const ConvParams& p, const std::string& dtype, bool prepared) {
  Problem pr;
  pr.op = op_from_name(op);
  FC_CHECK(pr.op == Op::conv2d_forward || pr.op == Op::conv2d_backward_data ||
               pr.op == Op::conv2d_backward_weight || is_tiled_op(pr.op),
           "op must be a convolution op (conv2d_forward, conv2d_backward_data, conv2d_backward_weight, "
           "tiled_conv2d_*), got '",
           op, "'");
  pr.conv = p;
  pr.dtype = dtype_from_name(dtype);
  pr.prepared = prepared;
  return pr;
}

// The problem of a run() call: the op and its params (ConvParams or PoolParams); the dtype
// comes from the tensors.
Problem run_problem(const std::string& op, const py::handle& params, bool prepared) {
  Problem pr;
  pr.op = op_from_name(op);
  const bool conv = pr.op == Op::conv2d_forward || pr.op == Op::conv2d_backward_data ||
                    pr.op == Op::conv2d_backward_weight || is_tiled_op(pr.op);
  if (py::isinstance<ConvParams>(params)) {
    FC_CHECK(conv, op, " takes PoolParams");
    pr.conv = params.cast<ConvParams>();
  } else if (py::isinstance<PoolParams>(params)) {
    FC_CHECK(!conv, op, " takes ConvParams");
    pr.pool = params.cast<PoolParams>();
  } else {
    throw py::type_error("fastconv: params must be a ConvParams or a PoolParams");
  }
  pr.prepared = prepared;
  return pr;
}

// Checks a C-contiguous array of the given dtype and shape; returns its data pointer (the
// utility bindings below, which take NumPy arrays on the CPU).
void* checked_data(const py::array& a, const char* name, py::dtype dtype,
                   std::initializer_list<index_t> shape, bool writable) {
  FC_CHECK(a.dtype().is(dtype), name, " has dtype ", std::string(py::str(a.dtype())), ", expected ",
           std::string(py::str(dtype)));
  FC_CHECK(a.flags() & py::array::c_style, name, " must be C-contiguous");
  FC_CHECK(!writable || a.writeable(), name, " must be writable");
  FC_CHECK(index_t(a.ndim()) == index_t(shape.size()), name, " must have ", shape.size(), " dimensions, got ",
           a.ndim());
  int i = 0;
  for (index_t d : shape) {
    FC_CHECK(a.shape(i) == d, name, " dimension ", i, " is ", a.shape(i), ", expected ", d);
    ++i;
  }
  return const_cast<void*>(a.data());
}

// pack_a / pack_b: pack that operand first (gemm_pack_a/b) and multiply from the packed
// form (gemm_ex), as plans and Winograd do; a_row0: with pack_a, op(A) may have more rows
// than C and the product uses rows [a_row0, a_row0 + M) of its packed form.
template <class T>
void gemm_typed(bool ta, bool tb, double alpha, const py::array& A, const py::array& B, double beta,
                py::array& C, const std::optional<py::array>& bias, bool pack_a, bool pack_b,
                index_t a_row0) {
  FC_CHECK(A.ndim() == 2 && B.ndim() == 2 && C.ndim() == 2, "gemm takes 2-D arrays");
  const index_t M = C.shape(0), N = C.shape(1);
  const index_t K = ta ? A.shape(0) : A.shape(1);
  const index_t MA = pack_a ? (ta ? A.shape(1) : A.shape(0)) : M;  // rows of op(A)
  FC_CHECK(a_row0 == 0 || pack_a, "a_row0 needs pack_a");
  py::dtype dt = py::dtype::of<T>();
  auto a = static_cast<const T*>(checked_data(A, "A", dt, {ta ? K : MA, ta ? MA : K}, false));
  auto b = static_cast<const T*>(checked_data(B, "B", dt, {tb ? N : K, tb ? K : N}, false));
  auto c = static_cast<T*>(checked_data(C, "C", dt, {M, N}, true));
  const T* bm = bias ? static_cast<const T*>(checked_data(*bias, "bias", dt, {M}, false)) : nullptr;
  py::gil_scoped_release nogil;
  enter_cpu();
  if (!pack_a && !pack_b) {
    cpu::gemm<T>(ta, tb, M, N, K, T(alpha), a, A.shape(1), b, B.shape(1), T(beta), c, N, bm);
    return;
  }
  std::vector<T> pa(pack_a ? cpu::gemm_pack_a_elems<T>(MA, K) : 0);
  std::vector<T> pb(pack_b ? cpu::gemm_pack_b_elems<T>(K, N) : 0);
  auto opa = cpu::GemmOperand<T>::plain(a, A.shape(1), ta);
  auto opb = cpu::GemmOperand<T>::plain(b, B.shape(1), tb);
  if (pack_a) {
    cpu::gemm_pack_a<T>(ta, MA, K, a, A.shape(1), pa.data());
    opa = cpu::GemmOperand<T>::prepacked(pa.data(), MA, a_row0);
  }
  if (pack_b) {
    cpu::gemm_pack_b<T>(tb, K, N, b, B.shape(1), pb.data());
    opb = cpu::GemmOperand<T>::prepacked(pb.data(), N);
  }
  cpu::gemm_ex<T>(M, N, K, T(alpha), opa, opb, T(beta), c, N, bm);
}

bool ranges_overlap(const py::array& a, const py::array& b) {
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.data()), b0 = reinterpret_cast<std::uintptr_t>(b.data());
  return a0 < b0 + std::uintptr_t(b.nbytes()) && b0 < a0 + std::uintptr_t(a.nbytes());
}

// wt (C, K/groups, R, S) = w (K, C/groups, R, S) with each group's channels swapped and the
// kernel rotated 180 degrees (see cpu::transpose_rotate_weight).
template <class T>
void transpose_rotate_weight_typed(const py::array& w, py::array& wt, index_t groups) {
  FC_CHECK(w.ndim() == 4, "w must have 4 dimensions, got ", w.ndim());
  const index_t K = w.shape(0), Cg = w.shape(1), R = w.shape(2), S = w.shape(3);
  FC_CHECK(groups >= 1 && K % groups == 0, "groups=", groups, " must be >= 1 and divide K=", K);
  py::dtype dt = py::dtype::of<T>();
  auto src = static_cast<const T*>(checked_data(w, "w", dt, {K, Cg, R, S}, false));
  auto dst = static_cast<T*>(checked_data(wt, "wt", dt, {Cg * groups, K / groups, R, S}, true));
  FC_CHECK(!ranges_overlap(w, wt), "wt must not overlap w");
  py::gil_scoped_release nogil;
  enter_cpu();
  cpu::transpose_rotate_weight<T>(K, Cg, groups, R * S, src, dst);
}

void transpose_rotate_weight(const py::array& w, py::array& wt, index_t groups) {
  if (dtype_of(w, "w") == DType::f32)
    transpose_rotate_weight_typed<float>(w, wt, groups);
  else
    transpose_rotate_weight_typed<double>(w, wt, groups);
}

void gemm(bool ta, bool tb, double alpha, const py::array& A, const py::array& B, double beta, py::array& C,
          const std::optional<py::array>& bias, bool pack_a, bool pack_b, index_t a_row0) {
  if (dtype_of(C, "C") == DType::f32)
    gemm_typed<float>(ta, tb, alpha, A, B, beta, C, bias, pack_a, pack_b, a_row0);
  else
    gemm_typed<double>(ta, tb, alpha, A, B, beta, C, bias, pack_a, pack_b, a_row0);
}

// C = alpha * A @ B + beta * C with a gathered B (GemmOperand::gathered): B(k, n) =
// data[k_offsets[k] + segment_offsets[n / segment] + n % segment]; every index is checked.
template <class T>
void gemm_gathered_typed(double alpha, const py::array& A, const py::array& data, const py::array& k_offsets,
                         const py::array& segment_offsets, index_t segment, double beta, py::array& C) {
  FC_CHECK(A.ndim() == 2 && C.ndim() == 2, "gemm_gathered takes a 2-D A and C");
  FC_CHECK(segment > 0, "segment must be positive, got ", segment);
  const index_t M = C.shape(0), N = C.shape(1), K = A.shape(1);
  py::dtype dt = py::dtype::of<T>(), di = py::dtype::of<index_t>();
  auto a = static_cast<const T*>(checked_data(A, "A", dt, {M, K}, false));
  auto d = static_cast<const T*>(checked_data(data, "data", dt, {index_t(data.size())}, false));
  auto ko = static_cast<const index_t*>(checked_data(k_offsets, "k_offsets", di, {K}, false));
  const index_t segments = (N + segment - 1) / segment;
  FC_CHECK(index_t(segment_offsets.size()) >= segments, "segment_offsets needs ", segments, " entries");
  auto so = static_cast<const index_t*>(
      checked_data(segment_offsets, "segment_offsets", di, {index_t(segment_offsets.size())}, false));
  for (index_t k = 0; k < K; ++k)
    for (index_t s = 0; s < segments; ++s) {
      const index_t first = ko[k] + so[s], last = first + std::min(segment, N - s * segment);
      FC_CHECK(first >= 0 && last <= index_t(data.size()), "row ", k, " segment ", s, " reads [", first, ", ",
               last, ") outside data of ", data.size());
    }
  auto c = static_cast<T*>(checked_data(C, "C", dt, {M, N}, true));
  py::gil_scoped_release nogil;
  enter_cpu();
  cpu::gemm_ex<T>(M, N, K, T(alpha), cpu::GemmOperand<T>::plain(a, K),
                  cpu::GemmOperand<T>::gathered(d, ko, so, segment), T(beta), c, N);
}

void gemm_gathered(double alpha, const py::array& A, const py::array& data, const py::array& k_offsets,
                   const py::array& segment_offsets, index_t segment, double beta, py::array& C) {
  if (dtype_of(C, "C") == DType::f32)
    gemm_gathered_typed<float>(alpha, A, data, k_offsets, segment_offsets, segment, beta, C);
  else
    gemm_gathered_typed<double>(alpha, A, data, k_offsets, segment_offsets, segment, beta, C);
}

// ---- Winograd: the matrices of math/winograd.h and one-tile transforms, for the tests ----
template <int Rows, int Cols>
py::array_t<double> matrix_array(const double (&a)[Rows][Cols]) {
  py::array_t<double> out({Rows, Cols});
  for (int i = 0; i < Rows; ++i)
    for (int j = 0; j < Cols; ++j) out.mutable_at(i, j) = a[i][j];
  return out;
}

template <int M>
py::tuple winograd_matrices_m() {
  using W = winograd::WinogradMatrices<M>;
  return py::make_tuple(matrix_array(W::AT), matrix_array(W::G), matrix_array(W::BT));
}

py::tuple winograd_matrices(int m) {
  if (m == 2) return winograd_matrices_m<2>();
  if (m == 4) return winograd_matrices_m<4>();
  if (m == 6) return winograd_matrices_m<6>();
  FC_CHECK(false, "winograd tile size must be 2, 4 or 6 (got ", m, ")");
  return py::tuple();
}

// which: 0 input (n x n -> n x n), 1 kernel (3 x 3 -> n x n), 2 output (n x n -> m x m).
py::array_t<float> winograd_transform(int m, int which, const py::array& tile) {
  FC_CHECK(m == 2 || m == 4 || m == 6, "winograd tile size must be 2, 4 or 6 (got ", m, ")");
  const index_t n = m + 2, in = which == 1 ? 3 : n, out = which == 2 ? m : n;
  auto t = py::array_t<float, py::array::c_style | py::array::forcecast>(tile);
  FC_CHECK(t.ndim() == 2 && t.shape(0) == in && t.shape(1) == in, "tile must be ", in, "x", in);
  py::array_t<float> y({out, out});
  FC_PICK_ISA(winograd_tile_transform)(m, which, t.data(), y.mutable_data());
  return y;
}

void bind_winograd(py::module_& m) {
  m.def("winograd_matrices", &winograd_matrices, py::arg("m"),
        "(AT, G, BT) of F(m x m, 3 x 3) as float64 arrays, as csrc/math/winograd.h holds them.");
  m.def(
      "winograd_transform_input", [](int mm, const py::array& d) { return winograd_transform(mm, 0, d); },
      py::arg("m"), py::arg("d"), "B^T d B of one (m+2)x(m+2) float32 tile, by the kernel's code.");
  m.def(
      "winograd_transform_kernel", [](int mm, const py::array& g) { return winograd_transform(mm, 1, g); },
      py::arg("m"), py::arg("g"), "G g G^T of one 3x3 float32 kernel, by the kernel's code.");
  m.def(
      "winograd_transform_output", [](int mm, const py::array& t) { return winograd_transform(mm, 2, t); },
      py::arg("m"), py::arg("t"), "A^T t A of one (m+2)x(m+2) float32 tile, by the kernel's code.");
}

// ---- FFT: one-tile transforms of math/fft.h, for the tests ------------------------------------
// forward: n x n float32 -> n x (n/2+1) complex64 (numpy's rfft2); inverse: n x (n/2+1)
// complex64 (Hermitian; only its distinct bins are read) -> n x n float32, n^2 irfft2.
py::array fft_transform(int n, int which, const py::array& tile) {
  FC_CHECK(n == 8 || n == 16, "fft tile size must be 8 or 16 (got ", n, ")");
  const index_t half = n / 2 + 1;
  if (which == 0) {
    auto t = py::array_t<float, py::array::c_style | py::array::forcecast>(tile);
    FC_CHECK(t.ndim() == 2 && t.shape(0) == n && t.shape(1) == n, "tile must be ", n, "x", n);
    py::array_t<std::complex<float>> y({index_t(n), half});
    FC_PICK_ISA(fft_tile_transform)(n, 0, t.data(), reinterpret_cast<float*>(y.mutable_data()));
    return y;
  }
  auto s = py::array_t<std::complex<float>, py::array::c_style | py::array::forcecast>(tile);
  FC_CHECK(s.ndim() == 2 && s.shape(0) == n && s.shape(1) == half, "spectrum must be ", n, "x", half);
  py::array_t<float> y({n, n});
  FC_PICK_ISA(fft_tile_transform)(n, 1, reinterpret_cast<const float*>(s.data()), y.mutable_data());
  return y;
}

void bind_fft(py::module_& m) {
  m.def(
      "fft_tile_forward", [](int n, const py::array& t) { return fft_transform(n, 0, t); }, py::arg("n"),
      py::arg("tile"),
      "Unnormalised 2-D real FFT of one n x n float32 tile (n = 8, 16), by the kernel's code: "
      "n x (n/2+1) complex64, as numpy.fft.rfft2.");
  m.def(
      "fft_tile_inverse", [](int n, const py::array& s) { return fft_transform(n, 1, s); }, py::arg("n"),
      py::arg("spectrum"),
      "Unnormalised inverse of fft_tile_forward (n*n times numpy.fft.irfft2), by the kernel's code.");
}

// ---- CUDA: the devices, and the GEMM hook of the tests and benchmarks ------------------------
py::dict cuda_devices() {
  py::dict d;
  py::list list;
#if FASTCONV_WITH_CUDA
  const cuda::Devices devs = cuda::devices();
  for (const cuda::DeviceInfo& g : devs.devices) {
    py::dict e;
    e["index"] = g.index;
    e["name"] = g.name;
    e["capability"] = py::make_tuple(g.major, g.minor);
    e["memory_bytes"] = g.memory_bytes;
    e["multiprocessors"] = g.multiprocessors;
    e["clock_ghz"] = g.clock_ghz;
    e["fp32_peak_tflops"] = g.fp32_peak_tflops;
    e["memory_bandwidth_gbs"] = g.memory_bandwidth_gbs;
    list.append(e);
  }
  d["why_none"] = devs.why_none;
  d["runtime_version"] = devs.runtime_version;
  d["driver_version"] = devs.driver_version;
  d["emulated"] = devs.emulated;
#else
  d["why_none"] = "this build of fastconv has no CUDA kernels (built without nvcc or with FASTCONV_CUDA=OFF)";
  d["runtime_version"] = 0;
  d["driver_version"] = 0;
  d["emulated"] = false;
#endif
  d["devices"] = list;
  return d;
}

void cuda_gemm(bool trans_a, bool trans_b, double alpha, const py::handle& A, const py::handle& B,
               double beta, const py::handle& C, int device_index, std::uintptr_t stream) {
#if FASTCONV_WITH_CUDA
  const TensorDesc a = desc_of(A, "A"), b = desc_of(B, "B"), c = desc_of(C, "C");
  const ExecContext ctx = context("cuda", device_index, stream);
  for (const TensorDesc* t : {&a, &b, &c}) {
    FC_CHECK(t->present && t->device == Device::cuda && t->device_index == device_index,
             "cuda_gemm takes CUDA tensors on device ", device_index);
    FC_CHECK(t->ndim == c.ndim && (t->ndim == 2 || t->ndim == 3), "A, B and C must all be 2-D or all 3-D");
    FC_CHECK(t->contiguous() && t->dtype == c.dtype, "A, B and C must be contiguous and of one dtype");
  }
  FC_CHECK(c.writable, "C must be writable");
  FC_CHECK(c.dtype == DType::f32 || c.dtype == DType::f64, "cuda_gemm takes float32 or float64");
  const int o = c.ndim - 2;  // the batch dimension, if any, comes first
  const index_t batch = o ? c.shape[0] : 1;
  FC_CHECK(!o || (a.shape[0] == batch && b.shape[0] == batch), "A, B and C must have one batch size");
  const index_t M = c.shape[o], N = c.shape[o + 1];
  const index_t K = trans_a ? a.shape[o] : a.shape[o + 1];
  FC_CHECK((trans_a ? a.shape[o + 1] : a.shape[o]) == M, "op(A) must have C's rows (", M, ")");
  FC_CHECK((trans_b ? b.shape[o + 1] : b.shape[o]) == K && (trans_b ? b.shape[o] : b.shape[o + 1]) == N,
           "op(B) must be (", K, ", ", N, ")");
  FC_CHECK(M > 0 && N > 0 && K > 0, "cuda_gemm needs M, N, K > 0");
  const index_t lda = a.shape[o + 1], ldb = b.shape[o + 1], ldc = N;
  py::gil_scoped_release nogil;
  cuda::enter(ctx);
  if (c.dtype == DType::f32)
    cuda::gemm<float>(trans_a, trans_b, M, N, K, float(alpha), static_cast<const float*>(a.data), lda,
                      static_cast<const float*>(b.data), ldb, float(beta), static_cast<float*>(c.data), ldc,
                      ctx.stream, batch, M * K, K * N, M * N);
  else
    cuda::gemm<double>(trans_a, trans_b, M, N, K, alpha, static_cast<const double*>(a.data), lda,
                       static_cast<const double*>(b.data), ldb, beta, static_cast<double*>(c.data), ldc,
                       ctx.stream, batch, M * K, K * N, M * N);
#else
  (void)trans_a, (void)trans_b, (void)alpha, (void)A, (void)B, (void)beta, (void)C, (void)device_index,
      (void)stream;
  FC_CHECK(false, "this build of fastconv has no CUDA kernels");
#endif
}

}  // namespace

PYBIND11_MODULE(FASTCONV_MODULE, m) {
  m.doc() = "fastconv core: convolution and pooling kernels (see fastconv for the Python API)";
  py::register_exception<dtype_error>(m, "DTypeError", PyExc_TypeError);
  active_isa();  // reads FASTCONV_ISA now, so a bad value fails the import, not a later call
  bind_winograd(m);
  bind_fft(m);

  py::class_<ConvParams>(m, "ConvParams")
      .def(py::init<>())
      .def_readwrite("N", &ConvParams::N)
      .def_readwrite("C", &ConvParams::C)
      .def_readwrite("H", &ConvParams::H)
      .def_readwrite("W", &ConvParams::W)
      .def_readwrite("K", &ConvParams::K)
      .def_readwrite("R", &ConvParams::R)
      .def_readwrite("S", &ConvParams::S)
      .def_readwrite("P", &ConvParams::P)
      .def_readwrite("Q", &ConvParams::Q)
      .def_readwrite("pad_h", &ConvParams::pad_h)
      .def_readwrite("pad_w", &ConvParams::pad_w)
      .def_readwrite("stride_h", &ConvParams::stride_h)
      .def_readwrite("stride_w", &ConvParams::stride_w)
      .def_readwrite("dil_h", &ConvParams::dil_h)
      .def_readwrite("dil_w", &ConvParams::dil_w)
      .def_readwrite("groups", &ConvParams::groups)
      .def_readwrite("tiles_h", &ConvParams::tiles_h)
      .def_readwrite("tiles_w", &ConvParams::tiles_w)
      .def_readwrite("channel_bias", &ConvParams::channel_bias)
      .def("flops", &ConvParams::flops);

  py::class_<PoolParams>(m, "PoolParams")
      .def(py::init<>())
      .def_readwrite("N", &PoolParams::N)
      .def_readwrite("C", &PoolParams::C)
      .def_readwrite("H", &PoolParams::H)
      .def_readwrite("W", &PoolParams::W)
      .def_readwrite("P", &PoolParams::P)
      .def_readwrite("Q", &PoolParams::Q)
      .def_readwrite("R", &PoolParams::R)
      .def_readwrite("S", &PoolParams::S)
      .def_readwrite("pad_h", &PoolParams::pad_h)
      .def_readwrite("pad_w", &PoolParams::pad_w)
      .def_readwrite("stride_h", &PoolParams::stride_h)
      .def_readwrite("stride_w", &PoolParams::stride_w)
      .def_readwrite("dil_h", &PoolParams::dil_h)
      .def_readwrite("dil_w", &PoolParams::dil_w)
      .def_readwrite("adaptive", &PoolParams::adaptive)
      .def_readwrite("count_include_pad", &PoolParams::count_include_pad)
      .def_readwrite("norm_type", &PoolParams::norm_type)
      .def_readwrite("divisor_override", &PoolParams::divisor_override)
      .def_readwrite("normalize", &PoolParams::normalize)
      .def_readwrite("separable", &PoolParams::separable);

  py::class_<TensorDesc>(m, "Tensor",
                         "A tensor's description for the core (pointer, dtype, shape, strides in elements, "
                         "device): how memory that is not a NumPy array reaches a kernel.")
      .def(py::init([](std::uintptr_t data, const std::string& dtype, const std::vector<index_t>& shape,
                       std::optional<std::vector<index_t>> strides, const std::string& device,
                       int device_index, bool writable) {
             TensorDesc d;
             d.data = reinterpret_cast<void*>(data);
             d.dtype = dtype == "int64" ? DType::i64 : dtype == "uint8" ? DType::u8 : dtype_from_name(dtype);
             FC_CHECK(shape.size() <= size_t(TensorDesc::kMaxDims), "at most ", TensorDesc::kMaxDims,
                      " dimensions are supported (got ", shape.size(), ")");
             FC_CHECK(!strides || strides->size() == shape.size(),
                      "strides must have one entry per dimension");
             d.ndim = int(shape.size());
             index_t step = 1;
             for (int i = d.ndim - 1; i >= 0; --i) {
               FC_CHECK(shape[i] >= 0, "shape must be non-negative");
               d.shape[i] = shape[i];
               d.strides[i] = strides ? (*strides)[i] : step;
               step *= shape[i];
             }
             d.device = device_from_name(device);
             FC_CHECK(device_index >= 0, "device_index must be >= 0 (got ", device_index, ")");
             d.device_index = device_index;
             d.writable = writable;
             d.present = true;
             return d;
           }),
           py::arg("data"), py::arg("dtype"), py::arg("shape"), py::arg("strides") = py::none(),
           py::arg("device") = "cpu", py::arg("device_index") = 0, py::arg("writable") = true)
      .def_property_readonly("data",
                             [](const TensorDesc& d) { return reinterpret_cast<std::uintptr_t>(d.data); })
      .def_property_readonly("dtype", [](const TensorDesc& d) { return std::string(dtype_name(d.dtype)); })
      .def_property_readonly(
          "shape", [](const TensorDesc& d) { return std::vector<index_t>(d.shape, d.shape + d.ndim); })
      .def_property_readonly(
          "strides", [](const TensorDesc& d) { return std::vector<index_t>(d.strides, d.strides + d.ndim); })
      .def_property_readonly("device", [](const TensorDesc& d) { return std::string(device_name(d.device)); })
      .def_property_readonly("device_index", [](const TensorDesc& d) { return d.device_index; })
      .def_property_readonly("writable", [](const TensorDesc& d) { return d.writable; })
      .def_static(
          "of", [](const py::array& a) { return desc_of(a, "array"); }, py::arg("array"),
          "The descriptor the core makes of a NumPy array.");

  m.def(
      "kernels",
      [] {
        py::list rows;
        for (const Kernel& k : kernel_table()) {
          py::dict d;
          d["algorithm"] = k.algorithm;
          d["op"] = op_name(k.op);
          d["device"] = device_name(k.device);
          d["prepares"] = k.prepare != nullptr;
          rows.append(d);
        }
        return rows;
      },
      "The kernel table: one dict per (algorithm, op, device).");

  m.def(
      "run",
      [](const std::string& op, const std::string& algorithm, const py::handle& params,
         const py::dict& tensors, const py::handle& workspace, const std::string& device, int device_index,
         std::uintptr_t stream, bool prepared) {
        const Problem pr = run_problem(op, params, prepared);
        const TensorArgs args = tensor_args(tensors);
        const TensorDesc ws = desc_of(workspace, "workspace");
        const ExecContext ctx = context(device, device_index, stream);
        py::gil_scoped_release nogil;
        run(pr, algorithm, ctx, args, ws);
      },
      py::arg("op"), py::arg("algorithm"), py::arg("params"), py::arg("tensors"),
      py::arg("workspace") = py::none(), py::arg("device") = "cpu", py::arg("device_index") = 0,
      py::arg("stream") = 0, py::arg("prepared") = false,
      "Runs one op of the kernel table. tensors maps slot names (x, w, bias, y, indices, grad_y, grad_x, "
      "grad_w, grad_bias) to NumPy arrays or Tensor descriptors; outputs are overwritten. Every tensor is "
      "checked (shape, dtype, contiguity, device, alignment) before the kernel runs; with prepared=True, "
      "w is the output of prepare_weights.");

  m.def(
      "supports",
      [](const std::string& algorithm, const ConvParams& p, const std::string& dtype, const std::string& op,
         const std::string& device) {
        return supports(conv_problem(op, p, dtype, false), algorithm, device_from_name(device));
      },
      py::arg("algorithm"), py::arg("params"), py::arg("dtype"), py::arg("op") = "conv2d_forward",
      py::arg("device") = "cpu",
      "'' when the algorithm can run this convolution op, else the reason it cannot.");

  m.def(
      "workspace_bytes",
      [](const std::string& algorithm, const ConvParams& p, const std::string& dtype, bool prepared,
         const std::string& op, const std::string& device, int device_index) {
        return workspace_bytes(conv_problem(op, p, dtype, prepared), algorithm,
                               context(device, device_index, 0));
      },
      py::arg("algorithm"), py::arg("params"), py::arg("dtype"), py::arg("prepared") = false,
      py::arg("op") = "conv2d_forward", py::arg("device") = "cpu", py::arg("device_index") = 0,
      "Workspace bytes the algorithm needs for this convolution op (conv2d_forward, "
      "conv2d_backward_data, conv2d_backward_weight) at the current thread count "
      "(with prepared=True: when its weights come from prepare_weights).");

  m.def(
      "prepared_bytes",
      [](const std::string& algorithm, const ConvParams& p, const std::string& dtype,
         const std::string& device) {
        return prepared_bytes(conv_problem("conv2d_forward", p, dtype, false), algorithm,
                              device_from_name(device));
      },
      py::arg("algorithm"), py::arg("params"), py::arg("dtype"), py::arg("device") = "cpu",
      "Bytes of the algorithm's prepared (pre-transformed) weights; 0 when it has none.");

  m.def(
      "prepare_weights",
      [](const std::string& algorithm, const ConvParams& p, const py::handle& w, const py::handle& out,
         const std::string& device, int device_index, std::uintptr_t stream) {
        const TensorDesc wd = desc_of(w, "weight"), od = desc_of(out, "out");
        Problem pr;  // its dtype comes from the weight (registry.h)
        pr.conv = p;
        const ExecContext ctx = context(device, device_index, stream);
        py::gil_scoped_release nogil;
        prepare(pr, algorithm, ctx, wd, od);
      },
      py::arg("algorithm"), py::arg("params"), py::arg("w"), py::arg("out"), py::arg("device") = "cpu",
      py::arg("device_index") = 0, py::arg("stream") = 0,
      "Writes the algorithm's prepared weights (1-D, prepared_bytes / itemsize elements) into out.");

  m.def("transpose_rotate_weight", &transpose_rotate_weight, py::arg("w"), py::arg("wt"),
        py::arg("groups") = 1,
        "wt (C, K/groups, R, S) = w (K, C/groups, R, S), each group's channels swapped and the kernel "
        "rotated 180 degrees: the weight of the data gradient as a forward convolution.");
  m.def("gemm", &gemm, py::arg("trans_a"), py::arg("trans_b"), py::arg("alpha"), py::arg("A"), py::arg("B"),
        py::arg("beta"), py::arg("C"), py::arg("bias") = py::none(), py::arg("pack_a") = false,
        py::arg("pack_b") = false, py::arg("a_row0") = 0,
        "C = alpha * op(A) @ op(B) + beta * C + bias[:, None] with the project's packed GEMM "
        "(pack_a/pack_b: from operands packed ahead, as plans use them; a_row0: first packed row of A).");
  m.def("gemm_gathered", &gemm_gathered, py::arg("alpha"), py::arg("A"), py::arg("data"),
        py::arg("k_offsets"), py::arg("segment_offsets"), py::arg("segment"), py::arg("beta"), py::arg("C"),
        "C = alpha * A @ B + beta * C with B gathered from data (int64 offsets): B[k, n] = "
        "data[k_offsets[k] + segment_offsets[n // segment] + n % segment], the implicit im2col "
        "of the weight gradient.");
  m.def(
      "gemm_pack_a_rows_multiple",
      [](const std::string& dtype) { return cpu::gemm_pack_a_rows_multiple(dtype_from_name(dtype)); },
      py::arg("dtype"), "Row granularity of packed A operands at the active ISA (the kernel's mr).");

  m.def(
      "measure_peak",
      [](double seconds, std::int64_t copy_bytes) {
        FC_CHECK(seconds > 0.0 && seconds <= 60.0, "seconds must be in (0, 60] (got ", seconds, ")");
        FC_CHECK(copy_bytes >= (1 << 20), "copy_bytes must be at least 1 MiB (got ", copy_bytes, ")");
        double gflops = 0.0, gbs = 0.0;
        {
          py::gil_scoped_release nogil;
          enter_cpu();
          gflops = FC_PICK_ISA(peak_fma_gflops)(seconds);
          gbs = FC_PICK_ISA(peak_copy_gbs)(seconds, copy_bytes);
        }
        py::dict d;
        d["gflops"] = gflops;
        d["copy_gbs"] = gbs;
        d["isa"] = std::string(isa_name(active_isa()));
        d["threads"] = cpu::num_threads();
        d["seconds"] = seconds;
        d["copy_bytes"] = copy_bytes;
        return d;
      },
      py::arg("seconds") = 0.2, py::arg("copy_bytes") = std::int64_t(256) << 20,
      "Machine peak (csrc/cpu/peak.cpp): fp32 FMA GFLOP/s on every thread for `seconds`, then memory "
      "copy GB/s (read + write, best repetition) over two buffers of `copy_bytes` for `seconds`.");

  m.def(
      "set_isa", [](const std::string& name) { set_isa(isa_from_name(name)); }, py::arg("name"),
      "Lower (never raise) the instruction set the CPU kernels use.");
  m.def("get_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("detected_isa", [] { return std::string(isa_name(detected_isa())); });
  m.def(
      "cpu_identity",
      [] {
        const CpuIdentity& id = cpu_identity();
        py::dict d;
        d["vendor"] = std::string(cpu_vendor_name(id.vendor));
        d["vendor_id"] = id.vendor_id;
        d["family"] = id.family;
        d["model"] = id.model;
        return d;
      },
      "The CPU as CPUID reports it: {'vendor': 'intel' | 'amd' | 'other', 'vendor_id' (e.g. "
      "'GenuineIntel'), 'family', 'model'}. auto's rules are tuned per vendor (fastconv.algorithms).");
  m.def("set_num_threads", &cpu::set_num_threads, py::arg("n"), "Threads the CPU kernels use.");
  m.def("get_num_threads", &cpu::num_threads);
  m.def(
      "all_finite",
      [](const py::array& a) {
        const DType dtype = dtype_of(a, "all_finite's array");
        FC_CHECK(a.flags() & py::array::c_style, "all_finite's array must be C-contiguous");
        const index_t n = index_t(a.size());
        return dtype == DType::f32 ? cpu::all_finite(static_cast<const float*>(a.data()), n)
                                   : cpu::all_finite(static_cast<const double*>(a.data()), n);
      },
      py::arg("a"),
      "False when the C-contiguous float32/float64 array holds NaN or Inf (the CPU threads read it).");
  m.def("cuda_devices", &cuda_devices,
        "The CUDA runtime's view: {'devices': [{index, name, capability, memory_bytes, multiprocessors, "
        "clock_ghz, fp32_peak_tflops, memory_bandwidth_gbs}], 'why_none', 'runtime_version', "
        "'driver_version', 'emulated'}. Never raises: a build without CUDA, no driver or no GPU gives no "
        "devices and the reason.");
  m.def("cuda_gemm", &cuda_gemm, py::arg("trans_a"), py::arg("trans_b"), py::arg("alpha"), py::arg("A"),
        py::arg("B"), py::arg("beta"), py::arg("C"), py::arg("device_index") = 0, py::arg("stream") = 0,
        "C = alpha * op(A) @ op(B) + beta * C on a CUDA device with the project's tiled GEMM (cuda/gemm.cu); "
        "A, B, C are CUDA Tensor descriptors, 2-D or 3-D (a batch), row-major. Queued on stream.");
#if FASTCONV_EMULATED_CUDA
  m.def("selftest_names", &emu_selftest::names, "The emulator's self-test kernels (cuda/emu_selftest.cu).");
  m.def(
      "selftest",
      [](const std::string& name) {
        py::gil_scoped_release nogil;
        return emu_selftest::run(name);
      },
      py::arg("name"),
      "Runs one self-test kernel on the emulator: the max abs error of its output (emulator errors raise).");
  m.def("set_order", &emu::set_order, py::arg("name"),
        "Order the emulator runs a block's threads in at each barrier: forward, reverse or shuffle.");
  m.def("get_order", &emu::order);
  m.def("fiber_switches", &emu::fiber_switches,
        "Fiber switches the emulator has made in this process (over finished launches).");
#endif
  m.def("build_info", [] {
    py::dict d;
    d["version"] = FASTCONV_VERSION;
    int cuda_kernels = 0;  // rows of the kernel table that run on CUDA devices
    for (const Kernel& k : kernel_table()) cuda_kernels += k.device == Device::cuda;
    d["cuda_kernels"] = cuda_kernels;
    d["cuda_emulated"] = bool(FASTCONV_EMULATED_CUDA);
    d["openmp"] = _OPENMP;
#if defined(__VERSION__)
    d["compiler"] = __VERSION__;
#endif
    d["sanitizers"] = FASTCONV_SANITIZERS;  // FASTCONV_SANITIZE of the build, e.g. "address,undefined"
    py::list ops;  // every op the kernel table has a row for, in Op order
    for (int i = 0; i <= int(kLastOp); ++i) ops.append(op_name(Op(i)));
    d["ops"] = py::tuple(ops);
    return d;
  });
}
