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
#include <initializer_list>

#include "dense_math.h"
#include "optimizer_math.h"

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

// ---- the optimizers' updates ----------------------------------------------------------------------

using Any = ffi::Buffer<ffi::F32>;  // a variable of any shape, and its slots

// Elements per piece of an optimizer's update: a pass over memory, worth a second thread only when long.
constexpr Index kElementsPerPiece = 1 << 16;

void split_elements(ffi::ThreadPool& pool, Index n, const std::function<void(Index, Index)>& work) {
  const Index pieces = std::max<Index>(1, std::min<Index>(pool.num_threads() + 1, n / kElementsPerPiece));
  if (pieces == 1) return work(0, n);
  // piece boundaries on whole vectors, so that the split does not move the scalar tail
  const Index vectors = n / kLanes;
  parallel_for(pool, pieces, [&](Index q) {
    const Index lo = q * vectors / pieces * kLanes, hi = q + 1 == pieces ? n : (q + 1) * vectors / pieces * kLanes;
    work(lo, hi);
  });
}

bool same_count(std::initializer_list<Index> counts) {
  for (Index c : counts)
    if (c != *counts.begin()) return false;
  return true;
}

// (variable, m, v, gradient, [alpha, 1 - beta_1, 1 - beta_2, epsilon]) -> (variable, m, v)
ffi::Error AdamUpdate(ffi::ThreadPool pool, Any p, Any m, Any v, Any g, Vec scalars, Out<Any> p_out, Out<Any> m_out,
                      Out<Any> v_out) {
  const Index n = Index(p.element_count());
  if (!same_count({n, Index(m.element_count()), Index(v.element_count()), Index(g.element_count()),
                   Index(p_out->element_count()), Index(m_out->element_count()), Index(v_out->element_count())}) ||
      scalars.element_count() != 4)
    return invalid("adam: variable, slots, gradient and outputs must have the same size, and 4 scalars");
  const float* c = scalars.typed_data();
  const AdamScalars s{c[0], c[1], c[2], c[3]};
  split_elements(pool, n, [&](Index lo, Index hi) {
    adam_update(p.typed_data(), m.typed_data(), v.typed_data(), g.typed_data(), p_out->typed_data(),
                m_out->typed_data(), v_out->typed_data(), s, lo, hi);
  });
  return ffi::Error::Success();
}

// (variable, velocity, gradient, [lr, rho, 1 - rho, epsilon]) -> (variable, velocity)
ffi::Error RmspropUpdate(ffi::ThreadPool pool, Any p, Any velocity, Any g, Vec scalars, Out<Any> p_out,
                         Out<Any> velocity_out) {
  const Index n = Index(p.element_count());
  if (!same_count({n, Index(velocity.element_count()), Index(g.element_count()), Index(p_out->element_count()),
                   Index(velocity_out->element_count())}) ||
      scalars.element_count() != 4)
    return invalid("rmsprop: variable, velocity, gradient and outputs must have the same size, and 4 scalars");
  const float* c = scalars.typed_data();
  const RmspropScalars s{c[0], c[1], c[2], c[3]};
  split_elements(pool, n, [&](Index lo, Index hi) {
    rmsprop_update(p.typed_data(), velocity.typed_data(), g.typed_data(), p_out->typed_data(),
                   velocity_out->typed_data(), s, lo, hi);
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace vaelab

namespace {
using vaelab::Any;
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
// the optimizers: (variable, slots..., gradient, scalars) -> (variable, slots...), in place where XLA can
XLA_FFI_DEFINE_HANDLER_SYMBOL(vaelab_adam_update, vaelab::AdamUpdate,
                              DenseBind().Arg<Any>().Arg<Any>().Arg<Any>().Arg<Any>().Arg<vaelab::Vec>().Ret<Any>().Ret<
                                  Any>().Ret<Any>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(vaelab_rmsprop_update, vaelab::RmspropUpdate,
                              DenseBind().Arg<Any>().Arg<Any>().Arg<Any>().Arg<vaelab::Vec>().Ret<Any>().Ret<Any>());
