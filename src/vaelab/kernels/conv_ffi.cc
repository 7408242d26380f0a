// XLA FFI handlers for conv_layers.h and conv_pool.h: shape checks, the split of a batch over XLA's
// thread pool (in the chunks of conv_chunks.h), and the dispatch to the channel counts compiled in.
// The dense layers' handlers (dense_ffi.h) are included at the end.
// Built by vaelab/kernels/_build.py.
//
// Every handler takes float32 NHWC buffers. Attributes: `activation` (conv_math.h's Activation)
// and, for upconv, `pad` (1: "same", 0: "valid"). The Python wrappers check shapes and dtypes
// before calling; the checks here only turn a mistake into an error instead of a crash.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>

#include "conv_chunks.h"
#include "conv_layers.h"
#include "conv_pool.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace vaelab {
namespace {

// The (input, output) channel counts each layer kind is compiled for: the ConvNet's layers.
#define VAELAB_CONV_POOL_CHANNELS(X) X(1, 16) X(16, 8)
#define VAELAB_CONV_CHANNELS(X) X(8, 8)
#define VAELAB_UPCONV_CHANNELS(X) X(8, 16) X(16, 1)

#define VAELAB_NAME_CHANNELS(C, F) " " #C "x" #F
constexpr const char kSupported[] = "conv_pool" VAELAB_CONV_POOL_CHANNELS(VAELAB_NAME_CHANNELS)  //
    ";conv" VAELAB_CONV_CHANNELS(VAELAB_NAME_CHANNELS)                                              //
    ";upconv" VAELAB_UPCONV_CHANNELS(VAELAB_NAME_CHANNELS)                                          //
    ";dense";  // any widths

// Calls fn(integral_constant<C>, integral_constant<F>) for the compiled pair (c, f); false if none.
#define VAELAB_DISPATCH_CHANNELS(C, F)                                         \
  if (c == C && f == F) {                                                      \
    fn(std::integral_constant<int, C>{}, std::integral_constant<int, F>{});   \
    return true;                                                               \
  }
template <class Fn>
bool conv_pool_channels(int64_t c, int64_t f, Fn&& fn) {
  VAELAB_CONV_POOL_CHANNELS(VAELAB_DISPATCH_CHANNELS)
  return false;
}
template <class Fn>
bool conv_channels(int64_t c, int64_t f, Fn&& fn) {
  VAELAB_CONV_CHANNELS(VAELAB_DISPATCH_CHANNELS)
  return false;
}
template <class Fn>
bool upconv_channels(int64_t c, int64_t f, Fn&& fn) {
  VAELAB_UPCONV_CHANNELS(VAELAB_DISPATCH_CHANNELS)
  return false;
}

// Runs fn(0) ... fn(count - 1) on the calling thread and on XLA's intra-op threads. The caller
// takes work too and then waits only for chunks already running, so it never waits on a task that
// has not started (XLA may call us from one of the pool's own threads). Helpers that start after
// all work is taken return at once; `State` lives until the last of them has looked at it.
void parallel_for(ffi::ThreadPool& pool, Index count, const std::function<void(Index)>& fn) {
  struct State {
    std::atomic<Index> next{0}, done{0};
    Index count = 0;
    const std::function<void(Index)>* fn = nullptr;
    std::mutex mu;
    std::condition_variable finished;
  };
  auto state = std::make_shared<State>();
  state->count = count;
  state->fn = &fn;
  auto work = [](State& s) {
    for (Index k; (k = s.next.fetch_add(1)) < s.count;) {
      (*s.fn)(k);
      if (s.done.fetch_add(1) + 1 == s.count) {
        std::lock_guard<std::mutex> lock(s.mu);
        s.finished.notify_all();
      }
    }
  };
  const Index helpers = std::min<Index>(pool.num_threads(), count) - 1;
  for (Index t = 0; t < helpers; ++t) pool.Schedule([state, work] { work(*state); });
  work(*state);
  std::unique_lock<std::mutex> lock(state->mu);
  state->finished.wait(lock, [&] { return state->done.load() == count; });
}

// The pool as conv_chunks.h's ChunkRunner.
ChunkRunner on(ffi::ThreadPool& pool) {
  return [&pool](Index count, const std::function<void(Index)>& fn) { parallel_for(pool, count, fn); };
}

using F32 = ffi::Buffer<ffi::F32, 4>;
using Vec = ffi::Buffer<ffi::F32, 1>;
using Int8 = ffi::Buffer<ffi::S8, 4>;
template <class B>
using Out = ffi::Result<B>;

ffi::Error invalid(const std::string& what) { return ffi::Error::InvalidArgument("vaelab kernel: " + what); }

bool same_dims(ffi::Span<const int64_t> a, ffi::Span<const int64_t> b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// x (n, h, w, c) and kernel (3, 3, c, f); the bias, when given, (f,).
bool conv_args(ffi::Span<const int64_t> x, ffi::Span<const int64_t> kernel, int64_t* c, int64_t* f) {
  *c = kernel[2];
  *f = kernel[3];
  return kernel[0] == 3 && kernel[1] == 3 && x[3] == *c && x[0] >= 0 && x[1] > 0 && x[2] > 0;
}

bool valid_activation(int32_t act) { return act == kLinear || act == kRelu || act == kSigmoid; }

// ---- conv_pool ----------------------------------------------------------------------------------

ffi::Error ConvPoolForward(ffi::ThreadPool pool, F32 x, F32 w, Vec b, Out<F32> y, Out<Int8> arg, int32_t act) {
  int64_t c, f;
  auto xd = x.dimensions();
  if (!conv_args(xd, w.dimensions(), &c, &f) || b.dimensions()[0] != f || xd[1] % 2 || xd[2] % 2 ||
      (act != kLinear && act != kRelu))
    return invalid("conv_pool forward: bad shapes or activation");
  const int64_t pooled[4] = {xd[0], xd[1] / 2, xd[2] / 2, f};
  const ffi::Span<const int64_t> want(pooled, 4);
  if (!same_dims(y->dimensions(), want) || !same_dims(arg->dimensions(), want))
    return invalid("conv_pool forward: bad output shapes");
  const int h = int(xd[1]), wd = int(xd[2]);
  bool ok = conv_pool_channels(c, f, [&](auto C, auto F) {
    for_chunks(on(pool), xd[0], [&](Index lo, Index hi) {
      ConvPool<C, F>::forward(x.typed_data(), w.typed_data(), b.typed_data(), act, h, wd, y->typed_data(),
                              arg->typed_data(), lo, hi);
    });
  });
  return ok ? ffi::Error::Success() : invalid("conv_pool: channels not compiled in");
}

bool conv_pool_grad_args(ffi::Span<const int64_t> y, ffi::Span<const int64_t> arg, ffi::Span<const int64_t> g) {
  return same_dims(y, arg) && same_dims(y, g);
}

ffi::Error ConvPoolWeights(ffi::ThreadPool pool, F32 x, F32 y, Int8 arg, F32 g, Out<F32> dw, Out<Vec> db,
                           int32_t act) {
  int64_t c, f;
  auto xd = x.dimensions(), yd = y.dimensions();
  if (!conv_args(xd, dw->dimensions(), &c, &f) || !conv_pool_grad_args(yd, arg.dimensions(), g.dimensions()) ||
      yd[0] != xd[0] || 2 * yd[1] != xd[1] || 2 * yd[2] != xd[2] || yd[3] != f || db->dimensions()[0] != f ||
      !valid_activation(act))
    return invalid("conv_pool weights: bad shapes or activation");
  const int h = int(xd[1]), wd = int(xd[2]);
  bool ok = conv_pool_channels(c, f, [&](auto C, auto F) {
    weight_gradients(on(pool), xd[0], 9 * C * F, F, dw->typed_data(), db->typed_data(),
                     [&](Index lo, Index hi, float* pdw, float* pdb) {
                       ConvPool<C, F>::weights(x.typed_data(), y.typed_data(), arg.typed_data(), g.typed_data(), act,
                                               h, wd, pdw, pdb, lo, hi);
                     });
  });
  return ok ? ffi::Error::Success() : invalid("conv_pool: channels not compiled in");
}

ffi::Error ConvPoolInput(ffi::ThreadPool pool, F32 w, F32 y, Int8 arg, F32 g, Out<F32> dx, int32_t act) {
  int64_t c, f;
  auto xd = dx->dimensions(), yd = y.dimensions();
  if (!conv_args(xd, w.dimensions(), &c, &f) || !conv_pool_grad_args(yd, arg.dimensions(), g.dimensions()) ||
      yd[0] != xd[0] || 2 * yd[1] != xd[1] || 2 * yd[2] != xd[2] || yd[3] != f || !valid_activation(act))
    return invalid("conv_pool input: bad shapes or activation");
  const int h = int(xd[1]), wd = int(xd[2]);
  bool ok = conv_pool_channels(c, f, [&](auto C, auto F) {
    for_chunks(on(pool), xd[0], [&](Index lo, Index hi) {
      ConvPool<C, F>::input(w.typed_data(), y.typed_data(), arg.typed_data(), g.typed_data(), act, h, wd,
                            dx->typed_data(), lo, hi);
    });
  });
  return ok ? ffi::Error::Success() : invalid("conv_pool: channels not compiled in");
}

// ---- conv ---------------------------------------------------------------------------------------

bool conv_out_args(ffi::Span<const int64_t> x, ffi::Span<const int64_t> y, int64_t f) {
  return y[0] == x[0] && y[1] == x[1] && y[2] == x[2] && y[3] == f;
}

ffi::Error ConvForward(ffi::ThreadPool pool, F32 x, F32 w, Vec b, Out<F32> y, int32_t act) {
  int64_t c, f;
  auto xd = x.dimensions();
  if (!conv_args(xd, w.dimensions(), &c, &f) || b.dimensions()[0] != f || !conv_out_args(xd, y->dimensions(), f) ||
      !valid_activation(act))
    return invalid("conv forward: bad shapes or activation");
  const int h = int(xd[1]), wd = int(xd[2]);
  bool ok = conv_channels(c, f, [&](auto C, auto F) {
    for_chunks(on(pool), xd[0], [&](Index lo, Index hi) {
      Conv<C, F>::forward(x.typed_data(), w.typed_data(), b.typed_data(), act, h, wd, y->typed_data(), lo, hi);
    });
  });
  return ok ? ffi::Error::Success() : invalid("conv: channels not compiled in");
}

ffi::Error ConvWeights(ffi::ThreadPool pool, F32 x, F32 y, F32 g, Out<F32> dw, Out<Vec> db, int32_t act) {
  int64_t c, f;
  auto xd = x.dimensions();
  if (!conv_args(xd, dw->dimensions(), &c, &f) || db->dimensions()[0] != f || !conv_out_args(xd, y.dimensions(), f) ||
      !same_dims(y.dimensions(), g.dimensions()) || !valid_activation(act))
    return invalid("conv weights: bad shapes or activation");
  const int h = int(xd[1]), wd = int(xd[2]);
  bool ok = conv_channels(c, f, [&](auto C, auto F) {
    weight_gradients(on(pool), xd[0], 9 * C * F, F, dw->typed_data(), db->typed_data(),
                     [&](Index lo, Index hi, float* pdw, float* pdb) {
                       Conv<C, F>::weights(x.typed_data(), y.typed_data(), g.typed_data(), act, h, wd, pdw, pdb, lo,
                                           hi);
                     });
  });
  return ok ? ffi::Error::Success() : invalid("conv: channels not compiled in");
}

ffi::Error ConvInput(ffi::ThreadPool pool, F32 w, F32 y, F32 g, Out<F32> dx, int32_t act) {
  int64_t c, f;
  auto xd = dx->dimensions();
  if (!conv_args(xd, w.dimensions(), &c, &f) || !conv_out_args(xd, y.dimensions(), f) ||
      !same_dims(y.dimensions(), g.dimensions()) || !valid_activation(act))
    return invalid("conv input: bad shapes or activation");
  const int h = int(xd[1]), wd = int(xd[2]);
  bool ok = conv_channels(c, f, [&](auto C, auto F) {
    for_chunks(on(pool), xd[0], [&](Index lo, Index hi) {
      Conv<C, F>::input(w.typed_data(), y.typed_data(), g.typed_data(), act, h, wd, dx->typed_data(), lo, hi);
    });
  });
  return ok ? ffi::Error::Success() : invalid("conv: channels not compiled in");
}

// ---- upconv -------------------------------------------------------------------------------------

bool upconv_args(ffi::Span<const int64_t> x, ffi::Span<const int64_t> kernel, ffi::Span<const int64_t> y, int32_t pad,
                 int64_t* c, int64_t* f, UpGeometry* geometry) {
  if (!conv_args(x, kernel, c, f) || (pad != 0 && pad != 1)) return false;
  *geometry = UpGeometry{int(x[1]), int(x[2]), pad};
  return y[0] == x[0] && y[1] == geometry->out_h() && y[2] == geometry->out_w() && y[3] == *f && y[1] > 0 && y[2] > 0;
}

ffi::Error UpConvForward(ffi::ThreadPool pool, F32 x, F32 w, Vec b, Out<F32> y, int32_t act, int32_t pad) {
  int64_t c, f;
  UpGeometry geo{};
  if (!upconv_args(x.dimensions(), w.dimensions(), y->dimensions(), pad, &c, &f, &geo) || b.dimensions()[0] != f ||
      !valid_activation(act))
    return invalid("upconv forward: bad shapes, pad or activation");
  bool ok = upconv_channels(c, f, [&](auto C, auto F) {
    const std::vector<float> wc = subpixel_kernels<C, F>(w.typed_data(), geo);
    for_chunks(on(pool), x.dimensions()[0], [&](Index lo, Index hi) {
      UpConv<C, F>::forward(x.typed_data(), wc.data(), b.typed_data(), act, geo, y->typed_data(), lo, hi);
    });
  });
  return ok ? ffi::Error::Success() : invalid("upconv: channels not compiled in");
}

ffi::Error UpConvWeights(ffi::ThreadPool pool, F32 x, F32 y, F32 g, Out<F32> dw, Out<Vec> db, int32_t act,
                         int32_t pad) {
  int64_t c, f;
  UpGeometry geo{};
  if (!upconv_args(x.dimensions(), dw->dimensions(), y.dimensions(), pad, &c, &f, &geo) ||
      db->dimensions()[0] != f || !same_dims(y.dimensions(), g.dimensions()) || !valid_activation(act))
    return invalid("upconv weights: bad shapes, pad or activation");
  bool ok = upconv_channels(c, f, [&](auto C, auto F) {
    std::vector<float> dwc(16 * C * F);
    weight_gradients(on(pool), x.dimensions()[0], 16 * C * F, F, dwc.data(), db->typed_data(),
                     [&](Index lo, Index hi, float* pdw, float* pdb) {
                       UpConv<C, F>::weights(x.typed_data(), y.typed_data(), g.typed_data(), act, geo, pdw, pdb, lo,
                                             hi);
                     });
    kernel_from_subpixel<C, F>(dwc.data(), geo, dw->typed_data());
  });
  return ok ? ffi::Error::Success() : invalid("upconv: channels not compiled in");
}

ffi::Error UpConvInput(ffi::ThreadPool pool, F32 w, F32 y, F32 g, Out<F32> dx, int32_t act, int32_t pad) {
  int64_t c, f;
  UpGeometry geo{};
  if (!upconv_args(dx->dimensions(), w.dimensions(), y.dimensions(), pad, &c, &f, &geo) ||
      !same_dims(y.dimensions(), g.dimensions()) || !valid_activation(act))
    return invalid("upconv input: bad shapes, pad or activation");
  bool ok = upconv_channels(c, f, [&](auto C, auto F) {
    const std::vector<float> wc = subpixel_kernels<C, F>(w.typed_data(), geo);
    for_chunks(on(pool), dx->dimensions()[0], [&](Index lo, Index hi) {
      UpConv<C, F>::input(wc.data(), y.typed_data(), g.typed_data(), act, geo, dx->typed_data(), lo, hi);
    });
  });
  return ok ? ffi::Error::Success() : invalid("upconv: channels not compiled in");
}

}  // namespace
}  // namespace vaelab

// ---- exported symbols ---------------------------------------------------------------------------

namespace {
using vaelab::F32;
using vaelab::Int8;
using vaelab::Vec;
// Every handler gets XLA's intra-op thread pool, then its buffers in the order ops.py passes them.
auto Bind() { return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>(); }
constexpr char kAct[] = "activation", kPad[] = "pad";
}  // namespace

// "kind CxF CxF;kind ...": the channel pairs compiled in, read by the Python side.
extern "C" const char* vaelab_kernels_supported() { return vaelab::kSupported; }

// conv_pool: (x, kernel, bias) -> (y, arg); (x, y, arg, dy) -> (dkernel, dbias); (kernel, y, arg, dy) -> dx
XLA_FFI_DEFINE_HANDLER_SYMBOL(vaelab_conv_pool_forward, vaelab::ConvPoolForward,
                              Bind().Arg<F32>().Arg<F32>().Arg<Vec>().Ret<F32>().Ret<Int8>().Attr<int32_t>(kAct));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    vaelab_conv_pool_weights, vaelab::ConvPoolWeights,
    Bind().Arg<F32>().Arg<F32>().Arg<Int8>().Arg<F32>().Ret<F32>().Ret<Vec>().Attr<int32_t>(kAct));
XLA_FFI_DEFINE_HANDLER_SYMBOL(vaelab_conv_pool_input, vaelab::ConvPoolInput,
                              Bind().Arg<F32>().Arg<F32>().Arg<Int8>().Arg<F32>().Ret<F32>().Attr<int32_t>(kAct));
// conv: (x, kernel, bias) -> y; (x, y, dy) -> (dkernel, dbias); (kernel, y, dy) -> dx
XLA_FFI_DEFINE_HANDLER_SYMBOL(vaelab_conv_forward, vaelab::ConvForward,
                              Bind().Arg<F32>().Arg<F32>().Arg<Vec>().Ret<F32>().Attr<int32_t>(kAct));
XLA_FFI_DEFINE_HANDLER_SYMBOL(vaelab_conv_weights, vaelab::ConvWeights,
                              Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Ret<Vec>().Attr<int32_t>(kAct));
XLA_FFI_DEFINE_HANDLER_SYMBOL(vaelab_conv_input, vaelab::ConvInput,
                              Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int32_t>(kAct));
// upconv: as conv, with the padding as an attribute
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    vaelab_upconv_forward, vaelab::UpConvForward,
    Bind().Arg<F32>().Arg<F32>().Arg<Vec>().Ret<F32>().Attr<int32_t>(kAct).Attr<int32_t>(kPad));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    vaelab_upconv_weights, vaelab::UpConvWeights,
    Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Ret<Vec>().Attr<int32_t>(kAct).Attr<int32_t>(kPad));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    vaelab_upconv_input, vaelab::UpConvInput,
    Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int32_t>(kAct).Attr<int32_t>(kPad));

// dense: the dense layers' handlers, which use this file's parallel_for
#include "dense_ffi.h"
// the whole training step of a dense VAE, on dense_ffi.h's layers
#include "vae_step_ffi.h"
