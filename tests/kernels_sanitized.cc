// Every compiled kernel (the conv layers', the dense layers', the optimizers' updates) against naive reference loops,
// without XLA, built with AddressSanitizer and
// UndefinedBehaviorSanitizer: CI's check that the kernel math and the batch's chunking stay inside
// their buffers, do nothing undefined, and compute the right numbers. (The FFI handlers' glue, in
// conv_ffi.cc, needs XLA: tests/run_sanitized.sh checks it, by hand.)
//
// The ConvNet's five layers, forward, weight gradients and input gradient each, at batches 1, 7 and
// 33, cut into chunks of images by conv_chunks.h (the handlers' own code; 33 images make chunks of
// 2 and a last one of 1) that run on two std::threads, like XLA's thread pool. The weight gradients
// are computed once more on one thread and must be bitwise the same (the chunks are added in
// order). Outputs start as NaN (int8 -1), so an element a kernel forgets to write is a mismatch.
//
// Inputs, kernels and gradients are multiples of 1/8 in [-1, 1]: every product is a multiple of
// 1/64 and every sum here stays far below 2^24 / 64, so the relu layers' sums are exact in float32
// in any order. The max-pooling's ties are therefore exact ties (many: small values, and a blank top
// half of each image, as around a digit), and which pixel wins each window is compared exactly. The
// sigmoid layer's values are not exact; all float values are compared with a tolerance relative to
// the array's magnitude. Exit 0 with one line saying what passed; 1 with the first mismatch; the
// sanitizers abort on any memory error or undefined behaviour.
//
// Built and run by tests/test_kernel_build.py with the flags of vaelab/kernels/_build.py; by hand:
//
//   c++ -std=c++17 -O1 -g -fopenmp-simd -march=native -fsanitize=address,undefined
//       -fno-sanitize-recover=all -Isrc/vaelab/kernels tests/kernels_sanitized.cc -o /tmp/ks
//   /tmp/ks
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "conv_chunks.h"
#include "conv_layers.h"
#include "conv_pool.h"
#include "dense_math.h"
#include "optimizer_math.h"
#include "vae_step.h"

using namespace vaelab;

namespace {

// ---- running the chunks -------------------------------------------------------------------------

// A ChunkRunner on two std::threads that take the next chunk as they finish one, as XLA's pool does.
void two_threads(Index count, const std::function<void(Index)>& fn) {
  std::atomic<Index> next{0};
  auto work = [&] {
    for (Index k; (k = next.fetch_add(1)) < count;) fn(k);
  };
  std::thread first(work), second(work);
  first.join();
  second.join();
}

void one_thread(Index count, const std::function<void(Index)>& fn) {
  for (Index k = 0; k < count; ++k) fn(k);
}

// ---- checking -----------------------------------------------------------------------------------

const float kUnwritten = std::numeric_limits<float>::quiet_NaN();
int kernel_runs = 0;  // kernels run and found equal to the reference
long tied_windows = 0;

[[noreturn]] void mismatch(const std::string& what, size_t i, double got, double want, double tolerance) {
  std::fprintf(stderr,
               "kernels_sanitized: MISMATCH in %s: element %zu is %.9g, the reference loops say %.9g "
               "(tolerance %.3g)\n",
               what.c_str(), i, got, want, tolerance);
  std::exit(1);
}

// Equal to float32 rounding: |got - want| <= 1e-4 |want| + 2e-6 max(1, max |want|), as test_kernels.py.
void check(const std::string& what, const std::vector<float>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) mismatch(what + " (sizes differ)", 0, double(got.size()), double(want.size()), 0);
  double scale = 1;
  for (double v : want) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < got.size(); ++i) {
    const double tolerance = 1e-4 * std::abs(want[i]) + 2e-6 * scale;
    if (!(std::abs(double(got[i]) - want[i]) <= tolerance)) mismatch(what, i, got[i], want[i], tolerance);
  }
}

void check_exact(const std::string& what, const std::vector<int8_t>& got, const std::vector<int8_t>& want) {
  for (size_t i = 0; i < want.size(); ++i)
    if (got[i] != want[i]) mismatch(what, i, got[i], want[i], 0);
}

void check_bitwise(const std::string& what, const std::vector<float>& got, const std::vector<float>& want) {
  for (size_t i = 0; i < want.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) mismatch(what, i, got[i], want[i], 0);
}

// ---- data ---------------------------------------------------------------------------------------

// n values k/8, k uniform in [-8, 8]; given h, w and c, the top half of each (images, h, w, c) image is zero.
std::vector<float> eighths(size_t n, unsigned seed, int h = 0, int w = 0, int c = 0) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> k(-8, 8);
  std::vector<float> v(n);
  for (float& x : v) x = k(gen) / 8.f;
  if (h > 0)
    for (size_t i = 0; i < n; ++i)
      if ((i / (size_t(w) * c)) % h < size_t(h / 2)) v[i] = 0.f;
  return v;
}

// ---- the reference: naive loops in double, from the layers' definitions ------------------------

double act(int32_t a, double v) { return a == kRelu ? std::max(v, 0.0) : a == kSigmoid ? 1 / (1 + std::exp(-v)) : v; }
double slope(int32_t a, double y) { return a == kRelu ? (y > 0 ? 1.0 : 0.0) : a == kSigmoid ? y * (1 - y) : 1.0; }

// out (n, h + 2 pad - 2, w + 2 pad - 2, f) = x (n, h, w, c) convolved with k (3, 3, c, f), with `pad`
// zero pixels around each image.
std::vector<double> conv3x3(const std::vector<float>& x, Index n, int h, int w, int c, const std::vector<float>& k,
                            int f, int pad) {
  const int oh = h + 2 * pad - 2, ow = w + 2 * pad - 2;
  std::vector<double> out(size_t(n) * oh * ow * f, 0.0);
  for (Index im = 0; im < n; ++im)
    for (int r = 0; r < oh; ++r)
      for (int s = 0; s < ow; ++s)
        for (int o = 0; o < f; ++o) {
          double sum = 0;
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) {
              const int a = r + i - pad, b = s + j - pad;
              if (a < 0 || a >= h || b < 0 || b >= w) continue;
              for (int ci = 0; ci < c; ++ci)
                sum += double(x[((im * h + a) * w + b) * c + ci]) * k[((i * 3 + j) * c + ci) * f + o];
            }
          out[((im * oh + r) * ow + s) * f + o] = sum;
        }
  return out;
}

struct Gradients {
  std::vector<double> kernel, bias, input;
};

// The gradients of sum(gz * (conv3x3(x, k, pad) + bias)) for gz at the convolution's output.
Gradients conv3x3_backward(const std::vector<float>& x, Index n, int h, int w, int c, const std::vector<float>& k,
                           int f, int pad, const std::vector<double>& gz) {
  const int oh = h + 2 * pad - 2, ow = w + 2 * pad - 2;
  Gradients d{std::vector<double>(9 * c * f, 0.0), std::vector<double>(f, 0.0), std::vector<double>(x.size(), 0.0)};
  for (Index im = 0; im < n; ++im)
    for (int r = 0; r < oh; ++r)
      for (int s = 0; s < ow; ++s)
        for (int o = 0; o < f; ++o) {
          const double v = gz[((im * oh + r) * ow + s) * f + o];
          d.bias[o] += v;
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) {
              const int a = r + i - pad, b = s + j - pad;
              if (a < 0 || a >= h || b < 0 || b >= w) continue;
              for (int ci = 0; ci < c; ++ci) {
                const Index at = ((im * h + a) * w + b) * c + ci, tap = ((i * 3 + j) * c + ci) * f + o;
                d.kernel[tap] += x[at] * v;
                d.input[at] += k[tap] * v;
              }
            }
        }
  return d;
}

// ---- the layers ---------------------------------------------------------------------------------

std::string label(const char* layer, const char* part, Index n) {
  return std::string(layer) + " " + part + " (batch " + std::to_string(n) + ")";
}

// The weight gradients by `weights` through conv_chunks.h on two threads, checked bitwise against
// the same on one thread; returns (kernel gradient, bias gradient).
template <class Weights>
std::pair<std::vector<float>, std::vector<float>> weight_gradients_checked(const std::string& what, Index n,
                                                                           Index kernel_size, int f,
                                                                           Weights&& weights) {
  std::vector<float> dk(kernel_size, kUnwritten), db(f, kUnwritten), dk1(kernel_size), db1(f);
  weight_gradients(two_threads, n, kernel_size, f, dk.data(), db.data(), weights);
  weight_gradients(one_thread, n, kernel_size, f, dk1.data(), db1.data(), weights);
  check_bitwise(what + ": kernel gradient, two threads against one", dk, dk1);
  check_bitwise(what + ": bias gradient, two threads against one", db, db1);
  return {dk, db};
}

// conv_pool: y = relu(max over each 2x2 window of conv3x3_same(x, k) + b), the first maximum on ties.
template <int C, int F>
void conv_pool(const char* layer, Index n, int h, int w) {
  const int ph = h / 2, pw = w / 2;
  const auto x = eighths(size_t(n) * h * w * C, 1, h, w, C), k = eighths(9 * C * F, 2), b = eighths(F, 3);
  const auto g = eighths(size_t(n) * ph * pw * F, 4);
  using L = ConvPool<C, F>;

  std::vector<float> y(g.size(), kUnwritten);
  std::vector<int8_t> arg(g.size(), -1);
  for_chunks(two_threads, n, [&](Index lo, Index hi) {
    L::forward(x.data(), k.data(), b.data(), kRelu, h, w, y.data(), arg.data(), lo, hi);
  });
  const std::vector<double> z = conv3x3(x, n, h, w, C, k, F, 1);
  std::vector<double> y_ref(g.size());
  std::vector<int8_t> arg_ref(g.size());
  for (Index im = 0; im < n; ++im)
    for (int i = 0; i < ph; ++i)
      for (int j = 0; j < pw; ++j)
        for (int o = 0; o < F; ++o) {
          double best = -INFINITY;
          int first = 0, ties = 0;
          for (int a = 0; a < 4; ++a) {  // (0, 0), (0, 1), (1, 0), (1, 1)
            const double v = z[((im * h + 2 * i + a / 2) * w + 2 * j + a % 2) * F + o];
            ties += v == best;
            if (v > best) best = v, first = a, ties = 0;
          }
          tied_windows += ties > 0;
          const Index at = ((im * ph + i) * pw + j) * F + o;
          y_ref[at] = act(kRelu, best + b[o]);
          arg_ref[at] = int8_t(first);
        }
  check(label(layer, "forward", n), y, y_ref);
  check_exact(label(layer, "forward: which pixel is each window's maximum", n), arg, arg_ref);

  std::vector<double> gz(z.size(), 0.0);  // the pooled gradient, at each window's maximum
  for (Index im = 0; im < n; ++im)
    for (int i = 0; i < ph; ++i)
      for (int j = 0; j < pw; ++j)
        for (int o = 0; o < F; ++o) {
          const Index at = ((im * ph + i) * pw + j) * F + o;
          const int a = arg_ref[at];
          gz[((im * h + 2 * i + a / 2) * w + 2 * j + a % 2) * F + o] = g[at] * slope(kRelu, y[at]);
        }
  const Gradients want = conv3x3_backward(x, n, h, w, C, k, F, 1, gz);
  const std::string what = label(layer, "weights", n);
  const auto [dk, db] =
      weight_gradients_checked(what, n, 9 * C * F, F, [&](Index lo, Index hi, float* pdk, float* pdb) {
        L::weights(x.data(), y.data(), arg.data(), g.data(), kRelu, h, w, pdk, pdb, lo, hi);
      });
  check(what + ": kernel gradient", dk, want.kernel);
  check(what + ": bias gradient", db, want.bias);

  std::vector<float> dx(x.size(), kUnwritten);
  for_chunks(two_threads, n, [&](Index lo, Index hi) {
    L::input(k.data(), y.data(), arg.data(), g.data(), kRelu, h, w, dx.data(), lo, hi);
  });
  check(label(layer, "input", n), dx, want.input);
  kernel_runs += 3;
}

// conv: y = relu(conv3x3_same(x, k) + b).
template <int C, int F>
void conv(const char* layer, Index n, int h, int w) {
  const auto x = eighths(size_t(n) * h * w * C, 5), k = eighths(9 * C * F, 6), b = eighths(F, 7);
  const auto g = eighths(size_t(n) * h * w * F, 8);
  using L = Conv<C, F>;

  std::vector<float> y(g.size(), kUnwritten);
  for_chunks(two_threads, n, [&](Index lo, Index hi) {
    L::forward(x.data(), k.data(), b.data(), kRelu, h, w, y.data(), lo, hi);
  });
  std::vector<double> y_ref = conv3x3(x, n, h, w, C, k, F, 1);
  for (size_t i = 0; i < y_ref.size(); ++i) y_ref[i] = act(kRelu, y_ref[i] + b[i % F]);
  check(label(layer, "forward", n), y, y_ref);

  std::vector<double> gz(g.size());
  for (size_t i = 0; i < gz.size(); ++i) gz[i] = g[i] * slope(kRelu, y[i]);
  const Gradients want = conv3x3_backward(x, n, h, w, C, k, F, 1, gz);
  const std::string what = label(layer, "weights", n);
  const auto [dk, db] =
      weight_gradients_checked(what, n, 9 * C * F, F, [&](Index lo, Index hi, float* pdk, float* pdb) {
        L::weights(x.data(), y.data(), g.data(), kRelu, h, w, pdk, pdb, lo, hi);
      });
  check(what + ": kernel gradient", dk, want.kernel);
  check(what + ": bias gradient", db, want.bias);

  std::vector<float> dx(x.size(), kUnwritten);
  for_chunks(two_threads, n, [&](Index lo, Index hi) {
    L::input(k.data(), y.data(), g.data(), kRelu, h, w, dx.data(), lo, hi);
  });
  check(label(layer, "input", n), dx, want.input);
  kernel_runs += 3;
}

// upconv: y = act(conv3x3(upsample2x_nearest(x), k) + b), with `pad` 1 ("same") or 0 ("valid").
// The kernel goes in and out through the sub-pixel kernels, as the FFI handlers do.
template <int C, int F>
void upconv(const char* layer, Index n, int h, int w, int pad, int32_t activation) {
  const UpGeometry geo{h, w, pad};
  const int oh = geo.out_h(), ow = geo.out_w();
  const auto x = eighths(size_t(n) * h * w * C, 9), k = eighths(9 * C * F, 10), b = eighths(F, 11);
  const auto g = eighths(size_t(n) * oh * ow * F, 12);
  const std::vector<float> kc = subpixel_kernels<C, F>(k.data(), geo);
  using L = UpConv<C, F>;

  auto source = [&](size_t i) {  // where element i of upsample2x_nearest(x) comes from in x
    const size_t c = i % C, s = i / C % (2 * w), r = i / C / (2 * w) % (2 * h), im = i / C / (2 * w) / (2 * h);
    return ((im * h + r / 2) * w + s / 2) * C + c;
  };
  std::vector<float> up(size_t(n) * 4 * h * w * C);
  for (size_t i = 0; i < up.size(); ++i) up[i] = x[source(i)];

  std::vector<float> y(g.size(), kUnwritten);
  for_chunks(two_threads, n, [&](Index lo, Index hi) {
    L::forward(x.data(), kc.data(), b.data(), activation, geo, y.data(), lo, hi);
  });
  std::vector<double> y_ref = conv3x3(up, n, 2 * h, 2 * w, C, k, F, pad);
  for (size_t i = 0; i < y_ref.size(); ++i) y_ref[i] = act(activation, y_ref[i] + b[i % F]);
  check(label(layer, "forward", n), y, y_ref);

  std::vector<double> gz(g.size());
  for (size_t i = 0; i < gz.size(); ++i) gz[i] = g[i] * slope(activation, y[i]);
  const Gradients want = conv3x3_backward(up, n, 2 * h, 2 * w, C, k, F, pad, gz);
  const std::string what = label(layer, "weights", n);
  const auto [dkc, db] =
      weight_gradients_checked(what, n, 16 * C * F, F, [&](Index lo, Index hi, float* pdk, float* pdb) {
        L::weights(x.data(), y.data(), g.data(), activation, geo, pdk, pdb, lo, hi);
      });
  std::vector<float> dk(9 * C * F, kUnwritten);
  kernel_from_subpixel<C, F>(dkc.data(), geo, dk.data());
  check(what + ": kernel gradient", dk, want.kernel);
  check(what + ": bias gradient", db, want.bias);

  std::vector<float> dx(x.size(), kUnwritten);
  for_chunks(two_threads, n, [&](Index lo, Index hi) {
    L::input(kc.data(), y.data(), g.data(), activation, geo, dx.data(), lo, hi);
  });
  std::vector<double> dx_ref(x.size(), 0.0);  // the upsampling's gradient: each 2x2 block summed
  for (size_t i = 0; i < up.size(); ++i) dx_ref[source(i)] += want.input[i];
  check(label(layer, "input", n), dx, dx_ref);
  kernel_runs += 3;
}


// ---- the dense layers and the optimizers' updates -----------------------------------------------

double dense_act(int32_t a, double v) { return a == kTanh ? std::tanh(v) : act(a, v); }
double dense_slope(int32_t a, double y) { return a == kTanh ? 1 - y * y : slope(a, y); }

// Runs work(u0, u1) over `units` cut into three pieces, on two threads (as dense_ffi.h's split does on XLA's pool).
void in_pieces(Index units, const std::function<void(Index, Index)>& work) {
  two_threads(3, [&](Index p) { work(p * units / 3, (p + 1) * units / 3); });
}

int dense_runs = 0;

// y = act(x w + b) (m, k) -> (m, n), and both backward passes, against double loops; the pieces on two threads
// must give bitwise what one thread gives.
void dense(Index m, Index k, Index n, int32_t activation) {
  const auto x = eighths(size_t(m) * k, 21), w = eighths(size_t(k) * n, 22), b = eighths(size_t(n), 23),
             g = eighths(size_t(m) * n, 24);
  const std::string what = "dense " + std::to_string(m) + "x" + std::to_string(k) + "->" + std::to_string(n) +
                           " activation " + std::to_string(activation);
  std::vector<float> y(size_t(m) * n, kUnwritten), y1(y);
  with_dense_activation(activation, [&](auto A) {
    using Act = decltype(A);
    in_pieces(DenseWork::strips(n), [&](Index s0, Index s1) {
      dense_forward<Act>(x.data(), w.data(), b.data(), y.data(), m, k, n, s0, s1);
    });
    dense_forward<Act>(x.data(), w.data(), b.data(), y1.data(), m, k, n, 0, DenseWork::strips(n));
  });
  std::vector<double> y_ref(y.size()), d_ref(y.size());
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      double sum = b[j];
      for (Index t = 0; t < k; ++t) sum += double(x[i * k + t]) * w[t * n + j];
      y_ref[i * n + j] = dense_act(activation, sum);
    }
  check(what + ": forward", y, y_ref);
  check_bitwise(what + ": forward on one thread", y1, y);

  std::vector<float> d(y.size(), kUnwritten);
  with_dense_activation(activation, [&](auto A) {
    pre_activation_gradient<decltype(A)>(y.data(), g.data(), d.data(), Index(d.size()));
  });
  for (size_t i = 0; i < d.size(); ++i) d_ref[i] = g[i] * dense_slope(activation, y[i]);
  check(what + ": pre-activation gradient", d, d_ref);

  std::vector<float> dw(w.size(), kUnwritten), db(b.size(), kUnwritten), dw1(dw), db1(db);
  in_pieces(DenseWork::strips(n), [&](Index s0, Index s1) {
    dense_weights(x.data(), d.data(), dw.data(), db.data(), m, k, n, s0, s1);
  });
  dense_weights(x.data(), d.data(), dw1.data(), db1.data(), m, k, n, 0, DenseWork::strips(n));
  std::vector<double> dw_ref(dw.size(), 0.0), db_ref(db.size(), 0.0);
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      db_ref[j] += d[i * n + j];
      for (Index t = 0; t < k; ++t) dw_ref[t * n + j] += double(x[i * k + t]) * d[i * n + j];
    }
  check(what + ": kernel gradient", dw, dw_ref);
  check(what + ": bias gradient", db, db_ref);
  check_bitwise(what + ": kernel gradient on one thread", dw1, dw);
  check_bitwise(what + ": bias gradient on one thread", db1, db);

  std::vector<float> dx(x.size(), kUnwritten), dx1(dx);
  in_pieces(DenseWork::dot_groups(k), [&](Index g0, Index g1) {
    dense_input(d.data(), w.data(), dx.data(), m, k, n, g0, g1);
  });
  dense_input(d.data(), w.data(), dx1.data(), m, k, n, 0, DenseWork::dot_groups(k));
  std::vector<double> dx_ref(dx.size(), 0.0);
  for (Index i = 0; i < m; ++i)
    for (Index t = 0; t < k; ++t)
      for (Index j = 0; j < n; ++j) dx_ref[i * k + t] += double(d[i * n + j]) * w[t * n + j];
  check(what + ": input gradient", dx, dx_ref);
  check_bitwise(what + ": input gradient on one thread", dx1, dx);
  dense_runs += 3;
}

// Adam's and RMSprop's updates of `count` elements, in three pieces on whole vectors, once into separate outputs and
// once in place, against the formulas in double.
void updates(Index count) {
  const auto p = eighths(size_t(count), 31), g = eighths(size_t(count), 32), m = eighths(size_t(count), 33);
  std::vector<float> v(static_cast<size_t>(count));
  for (Index i = 0; i < count; ++i) v[i] = std::abs(m[i]) * 0.5f;  // a second moment is never negative
  const AdamScalars adam{1e-3f, 0.1f, 1e-3f, 1e-7f};
  const RmspropScalars rms{1e-3f, 0.9f, 0.1f, 1e-7f};
  auto pieces = [&](const std::function<void(Index, Index)>& work) {
    const Index vectors = count / kLanes;
    two_threads(3, [&](Index q) { work(q * vectors / 3 * kLanes, q == 2 ? count : (q + 1) * vectors / 3 * kLanes); });
  };
  std::vector<double> p_ref(count), m_ref(count), v_ref(count), pr_ref(count), s_ref(count);
  for (Index i = 0; i < count; ++i) {
    m_ref[i] = m[i] + (double(g[i]) - m[i]) * adam.one_minus_beta_1;
    v_ref[i] = v[i] + (double(g[i]) * g[i] - v[i]) * adam.one_minus_beta_2;
    p_ref[i] = p[i] - m_ref[i] * adam.alpha / (std::sqrt(v_ref[i]) + adam.epsilon);
    s_ref[i] = rms.rho * double(v[i]) + rms.one_minus_rho * double(g[i]) * g[i];
    pr_ref[i] = p[i] - rms.lr * double(g[i]) / std::sqrt(s_ref[i] + rms.epsilon);
  }
  std::vector<float> po(count, kUnwritten), mo(po), vo(po), pi(p), mi(m), vi(v);
  pieces([&](Index lo, Index hi) {
    adam_update(p.data(), m.data(), v.data(), g.data(), po.data(), mo.data(), vo.data(), adam, lo, hi);
  });
  pieces([&](Index lo, Index hi) {
    adam_update(pi.data(), mi.data(), vi.data(), g.data(), pi.data(), mi.data(), vi.data(), adam, lo, hi);
  });
  const std::string what = "adam, " + std::to_string(count) + " elements";
  check(what + ": variable", po, p_ref);
  check(what + ": m", mo, m_ref);
  check(what + ": v", vo, v_ref);
  check_bitwise(what + ": in place", pi, po);
  std::vector<float> ps(count, kUnwritten), so(ps), pin(p), sin(v);
  pieces([&](Index lo, Index hi) {
    rmsprop_update(p.data(), v.data(), g.data(), ps.data(), so.data(), rms, lo, hi);
  });
  pieces([&](Index lo, Index hi) {
    rmsprop_update(pin.data(), sin.data(), g.data(), pin.data(), sin.data(), rms, lo, hi);
  });
  check("rmsprop, " + std::to_string(count) + " elements: variable", ps, pr_ref);
  check("rmsprop, " + std::to_string(count) + " elements: velocity", so, s_ref);
  check_bitwise("rmsprop in place", pin, ps);
}


// ---- a dense VAE's whole step (vae_step.h) --------------------------------------------------------

int step_runs = 0;

// The step's mean objective in double, from the parameters p (every layer's kernel then bias, vae_step.h's order).
double reference_objective(const std::vector<std::vector<double>>& p, const std::vector<Index>& widths, Index latent,
                           const std::vector<float>& x, const std::vector<float>& eps, Index batch, Index samples,
                           int32_t act, int32_t objective, double kl_weight, std::vector<double>* per_image) {
  const Index n = Index(widths.size()) - 1, D = widths[0];
  auto activation = [&](double v) {
    return act == kTanh ? std::tanh(v) : act == kSigmoid ? 1 / (1 + std::exp(-v)) : act == kRelu ? std::max(v, 0.) : v;
  };
  auto layer = [&](Index j, const std::vector<double>& in, Index rows, Index k, Index m, bool hidden) {
    std::vector<double> out(rows * m);
    for (Index r = 0; r < rows; ++r)
      for (Index o = 0; o < m; ++o) {
        double v = p[2 * j + 1][o];
        for (Index i = 0; i < k; ++i) v += in[r * k + i] * p[2 * j][i * m + o];
        out[r * m + o] = hidden ? activation(v) : v;
      }
    return out;
  };
  std::vector<double> h(x.begin(), x.end());
  for (Index j = 0; j < n; ++j) h = layer(j, h, batch, widths[j], widths[j + 1], true);
  const auto mu = layer(n, h, batch, widths[n], latent, false), lv = layer(n + 1, h, batch, widths[n], latent, false);
  const Index R = batch * samples;
  std::vector<double> z(R * latent);
  for (Index r = 0; r < R; ++r)
    for (Index l = 0; l < latent; ++l)
      z[r * latent + l] = mu[r / samples * latent + l] + std::exp(0.5 * lv[r / samples * latent + l]) * eps[r * latent + l];
  std::vector<double> d = z;
  for (Index j = 0; j < n; ++j)
    d = layer(n + 2 + j, d, R, j ? widths[n - j + 1] : latent, widths[n - j], true);
  const auto logits = layer(2 * n + 2, d, R, widths[1], D, false);
  double total = 0;
  per_image->assign(batch, 0.);
  for (Index i = 0; i < batch; ++i) {
    double kl = 0, most = -1e300;
    for (Index l = 0; l < latent; ++l) {
      const double m = mu[i * latent + l], v = lv[i * latent + l];
      kl += 0.5 * (std::exp(v) - v + m * m - 1);
    }
    std::vector<double> log_w(samples);
    for (Index k = 0; k < samples; ++k) {
      const Index r = i * samples + k;
      double ll = 0;
      for (Index t = 0; t < D; ++t) {
        const double q = std::min(std::max(1 / (1 + std::exp(-logits[r * D + t])), 1e-7), 1 - 1e-7);
        ll += x[i * D + t] * std::log(q) + (1 - x[i * D + t]) * std::log(1 - q);
      }
      double log_pq = 0;
      for (Index l = 0; l < latent; ++l) {
        const double zv = z[r * latent + l], v = lv[i * latent + l], u = (zv - mu[i * latent + l]) * std::exp(-0.5 * v);
        log_pq += -0.5 * zv * zv + 0.5 * (v + u * u);
      }
      log_w[k] = objective == kObjectiveElbo ? ll - kl_weight * kl : ll + log_pq;
      most = std::max(most, log_w[k]);
    }
    double sum = 0;
    for (double w : log_w) sum += std::exp(w - most);
    (*per_image)[i] = -(most + std::log(sum / double(samples)));
    total += (*per_image)[i] / double(batch);
  }
  return total;
}

// One step of the kernel against the reference in double: the per-image objectives, and the gradients (RMSprop with
// learning rate 1, rho 1, epsilon 0 and velocities of one moves each parameter by exactly its gradient) against
// central differences of the reference.
void vae_step_check(Index batch, Index samples, int32_t act, bool binary) {
  const std::vector<Index> widths = {19, 9, 3};  // D (two vectors and a tail), hidden widths
  const Index latent = 2, n = 2, D = widths[0];
  const int32_t objective = samples > 1 ? kObjectiveIwae : kObjectiveElbo;
  std::vector<std::pair<Index, Index>> shapes;  // every layer's (in, out), vae_step.h's order
  for (Index j = 0; j < n; ++j) shapes.push_back({widths[j], widths[j + 1]});
  shapes.push_back({widths[n], latent});
  shapes.push_back({widths[n], latent});
  for (Index j = 0; j < n; ++j) shapes.push_back({j ? widths[n - j + 1] : latent, widths[n - j]});
  shapes.push_back({widths[1], D});
  std::vector<std::vector<float>> params, slots;
  std::vector<std::vector<double>> exact;
  int seed = 50;
  for (auto [in, out] : shapes)
    for (Index size : {in * out, out}) {
      auto values = eighths(size_t(size), seed++);
      for (auto& v : values) v *= 0.5f;
      params.push_back(values);
      exact.emplace_back(values.begin(), values.end());
      slots.emplace_back(size_t(size), 1.f);
    }
  auto x = eighths(size_t(batch * D), seed++);
  for (auto& v : x) v = binary ? float(v > 0) : std::abs(v);
  const auto eps = eighths(size_t(batch * samples * latent), seed++);
  std::vector<StepLayer> layers;
  for (size_t j = 0; j < shapes.size(); ++j)
    layers.push_back({params[2 * j].data(), params[2 * j + 1].data(), {slots[2 * j].data(), nullptr},
                      {slots[2 * j + 1].data(), nullptr}, shapes[j].first, shapes[j].second});
  const StepOptimizer sgd{kRmsprop, {1.f, 1.f, 0.f, 0.f}};
  const StepNetwork net{batch, samples, n, act, objective, 0.7f};
  std::vector<float> rec(batch, kUnwritten), kl(batch, kUnwritten), obj(batch, kUnwritten);
  // the same step with every pass in pieces (of one unit each) on two threads: bitwise the same
  auto params_split = params, slots_split = slots;
  std::vector<StepLayer> layers_split = layers;
  for (size_t j = 0; j < shapes.size(); ++j) {
    layers_split[j].w = params_split[2 * j].data();
    layers_split[j].b = params_split[2 * j + 1].data();
    layers_split[j].w_slot[0] = slots_split[2 * j].data();
    layers_split[j].b_slot[0] = slots_split[2 * j + 1].data();
  }
  const Splitter pieces = [](Index units, double, const std::function<void(Index, Index)>& work) {
    two_threads(units, [&](Index u) { work(u, u + 1); });
  };
  std::vector<float> rec_split(batch), kl_split(batch), obj_split(batch);
  StepScratch scratch, scratch_split;
  vae_step(net, layers.data(), sgd, x.data(), eps.data(), rec.data(), kl.data(), obj.data(), scratch);
  vae_step(net, layers_split.data(), sgd, x.data(), eps.data(), rec_split.data(), kl_split.data(), obj_split.data(),
           scratch_split, pieces);
  const std::string what = std::string(objective == kObjectiveIwae ? "iwae" : "vae") + " step, batch " +
                           std::to_string(batch) + ", K " + std::to_string(samples) + (binary ? ", binary" : ", grey");
  std::vector<double> want;
  reference_objective(exact, widths, latent, x, eps, batch, samples, act, objective, 0.7, &want);
  check(what + ": objective", obj, want);
  check_bitwise(what + ": objective on two threads", obj_split, obj);
  for (size_t t = 0; t < params.size(); ++t) check_bitwise(what + ": a parameter on two threads", params_split[t], params[t]);
  std::vector<double> scratch_images;
  for (size_t t = 0; t < params.size(); ++t) {
    std::vector<float> got(params[t].size());
    std::vector<double> slope(params[t].size());
    for (size_t e = 0; e < params[t].size(); ++e) {
      got[e] = float(double(exact[t][e]) - params[t][e]);  // p - (p - g)
      const double h = 1e-4, keep = exact[t][e];
      exact[t][e] = keep + h;
      const double up = reference_objective(exact, widths, latent, x, eps, batch, samples, act, objective, 0.7,
                                            &scratch_images);
      exact[t][e] = keep - h;
      const double down = reference_objective(exact, widths, latent, x, eps, batch, samples, act, objective, 0.7,
                                              &scratch_images);
      exact[t][e] = keep;
      slope[e] = (up - down) / (2 * h);
    }
    double scale = 1e-3;
    for (double v : slope) scale = std::max(scale, std::abs(v));
    for (size_t e = 0; e < got.size(); ++e) {  // float32 arithmetic against double differences
      const double tolerance = 1e-3 * std::abs(slope[e]) + 2e-4 * scale;
      if (!(std::abs(got[e] - slope[e]) <= tolerance))
        mismatch(what + ": gradient of parameter " + std::to_string(t), e, got[e], slope[e], tolerance);
    }
  }
  ++step_runs;
}

}  // namespace

int main() {
  const Index batches[] = {1, 7, 33};
  for (Index n : batches) {
    conv_pool<1, 16>("encoder_conv1 (conv_pool 1->16, 28x28)", n, 28, 28);
    conv_pool<16, 8>("encoder_conv2 (conv_pool 16->8, 14x14)", n, 14, 14);
    conv<8, 8>("decoder_conv1 (conv 8->8, 8x8)", n, 8, 8);
    upconv<8, 16>("decoder_conv2 (upconv 8->16 valid, 8x8)", n, 8, 8, 0, kRelu);
    upconv<16, 1>("decoder_mean (upconv 16->1 same + sigmoid, 14x14)", n, 14, 14, 1, kSigmoid);
  }
  if (tied_windows == 0) {
    std::fprintf(stderr, "kernels_sanitized: the data made no max-pooling ties, which this check must include\n");
    return 1;
  }
  // widths with and without whole vectors, and a strip left over; every dense activation
  const Index shapes[][2] = {{13, 50}, {5, 2}, {50, 31}, {30, 200}, {2, 784}};
  for (Index n : batches)
    for (const auto& kn : shapes)
      for (int32_t a : {int32_t(kLinear), int32_t(kRelu), int32_t(kSigmoid), kTanh}) dense(n, kn[0], kn[1], a);
  for (Index count : {1, 7, 8, 1003}) updates(count);
  for (int32_t a : {kTanh, int32_t(kSigmoid)})
    for (bool binary : {true, false}) {
      vae_step_check(3, 1, a, binary);
      vae_step_check(2, 3, a, binary);
    }
  const int per_batch = kernel_runs / int(std::size(batches));
  std::printf("kernels_sanitized: %d kernels x %d batches (1, 7, 33) on 2 threads equal the reference loops "
              "(%ld max-pooling windows with ties)\n",
              per_batch, int(std::size(batches)), tied_windows);
  std::printf("kernels_sanitized: %d dense passes (5 shapes x 4 activations x 3 batches x forward, weights, input) "
              "and the Adam and RMSprop updates on 2 threads equal the reference loops\n",
              dense_runs);
  std::printf("kernels_sanitized: %d whole VAE and IWAE steps (vae_step.h) equal the reference in double, gradients "
              "against its central differences, bitwise the same in pieces on 2 threads\n",
              step_runs);
  return 0;
}
