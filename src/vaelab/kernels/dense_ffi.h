// XLA FFI handlers for dense_math.h: shape checks, and the split of each pass over XLA's thread pool.
// Included once, at the end of conv_ffi.cc (the library is one translation unit), whose
// parallel_for, invalid and same_dims it uses.
//
// Every handler takes row-major float32 matrices: x (M, K), kernel (K, N), bias (N), y (M, N). The
// attribute `activation` is dense_math.h's (linear 0, relu 1, sigmoid 2, tanh 3). The Python
// wrappers (ops.py) check shapes and dtypes before calling; the checks here only turn a mistake into
// an error instead of a crash.
#pragma once

#include <functional>

#include "dense_math.h"

namespace vaelab {
namespace {

using Matrix = ffi::Buffer<ffi::F32, 2>;

// A pass is split into pieces of whole units (strips, dot groups) of at least about this many
// floating-point operations each: waking a thread of XLA's pool costs microseconds, as much as a
// small layer's whole product, so small layers run on the calling thread alone.
constexpr double kFlopsPerPiece = 1.5e6;

// Runs work(u0, u1) over `units` units cut into pieces for the pool's threads and the caller.
void split(ffi::ThreadPool& pool, Index units, double flops, const std::function<void(Index, Index)>& work) {
  const Index most = std::min<Index>(units, pool.num_threads() + 1);
  const Index pieces = std::max<Index>(1, std::min<Index>(most, Index(flops / kFlopsPerPiece)));
  if (pieces == 1) return work(0, units);
  parallel_for(pool, pieces, [&](Index p) { work(p * units / pieces, (p + 1) * units / pieces); });
}

bool dense_shapes(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, ffi::Span<const int64_t> y) {
  return x[0] == y[0] && x[1] == w[0] && w[1] == y[1] && x[0] > 0 && w[0] > 0 && w[1] > 0;
}

ffi::Error DenseForward(ffi::ThreadPool pool, Matrix x, Matrix w, Vec b, Out<Matrix> y, int32_t act) {
  auto xd = x.dimensions(), wd = w.dimensions();
  if (!dense_shapes(xd, wd, y->dimensions()) || b.dimensions()[0] != wd[1] || !valid_dense_activation(act))
    return invalid("dense forward: bad shapes or activation");
  const Index M = xd[0], K = xd[1], N = wd[1];
  with_dense_activation(act, [&](auto activation) {
    split(pool, DenseWork::strips(N), 2.0 * M * K * N, [&](Index s0, Index s1) {
      dense_forward<decltype(activation)>(x.typed_data(), w.typed_data(), b.typed_data(), y->typed_data(), M, K, N,
                                          s0, s1);
    });
  });
  return ffi::Error::Success();
}

// d = g * act'(y) into `d`, or g itself for a linear layer (no copy).
const float* pre_activation(int32_t act, const float* y, const float* g, Index count, std::vector<float>& d) {
  if (act == kLinear) return g;
  d.resize(count);
  with_dense_activation(act, [&](auto activation) {
    pre_activation_gradient<decltype(activation)>(y, g, d.data(), count);
  });
  return d.data();
}

ffi::Error DenseWeights(ffi::ThreadPool pool, Matrix x, Matrix y, Matrix g, Out<Matrix> dw, Out<Vec> db, int32_t act) {
  auto xd = x.dimensions(), wd = dw->dimensions();
  if (!dense_shapes(xd, wd, y.dimensions()) || !same_dims(y.dimensions(), g.dimensions()) ||
      db->dimensions()[0] != wd[1] || !valid_dense_activation(act))
    return invalid("dense weights: bad shapes or activation");
  const Index M = xd[0], K = xd[1], N = wd[1];
  std::vector<float> buffer;
  const float* d = pre_activation(act, y.typed_data(), g.typed_data(), M * N, buffer);
  split(pool, DenseWork::strips(N), 2.0 * M * K * N, [&](Index s0, Index s1) {
    dense_weights(x.typed_data(), d, dw->typed_data(), db->typed_data(), M, K, N, s0, s1);
  });
  return ffi::Error::Success();
}

ffi::Error DenseInput(ffi::ThreadPool pool, Matrix w, Matrix y, Matrix g, Out<Matrix> dx, int32_t act) {
  auto xd = dx->dimensions(), wd = w.dimensions();
  if (!dense_shapes(xd, wd, y.dimensions()) || !same_dims(y.dimensions(), g.dimensions()) ||
      !valid_dense_activation(act))
    return invalid("dense input: bad shapes or activation");
  const Index M = xd[0], K = xd[1], N = wd[1];
  std::vector<float> buffer;
  const float* d = pre_activation(act, y.typed_data(), g.typed_data(), M * N, buffer);
  split(pool, DenseWork::dot_groups(K), 2.0 * M * K * N, [&](Index g0, Index g1) {
    dense_input(d, w.typed_data(), dx->typed_data(), M, K, N, g0, g1);
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace vaelab

namespace {
using vaelab::Matrix;
constexpr char kDenseAct[] = "activation";
auto DenseBind() { return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>(); }
}  // namespace

// dense: (x, kernel, bias) -> y; (x, y, dy) -> (dkernel, dbias); (kernel, y, dy) -> dx
XLA_FFI_DEFINE_HANDLER_SYMBOL(vaelab_dense_forward, vaelab::DenseForward,
                              DenseBind().Arg<Matrix>().Arg<Matrix>().Arg<vaelab::Vec>().Ret<Matrix>().Attr<int32_t>(
                                  kDenseAct));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    vaelab_dense_weights, vaelab::DenseWeights,
    DenseBind().Arg<Matrix>().Arg<Matrix>().Arg<Matrix>().Ret<Matrix>().Ret<vaelab::Vec>().Attr<int32_t>(kDenseAct));
XLA_FFI_DEFINE_HANDLER_SYMBOL(vaelab_dense_input, vaelab::DenseInput,
                              DenseBind().Arg<Matrix>().Arg<Matrix>().Arg<Matrix>().Ret<Matrix>().Attr<int32_t>(
                                  kDenseAct));
