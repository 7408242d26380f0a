// A dense layer y = act(x w + b) and its two backward passes, as register-tiled matrix products for
// the small batches of a VAE's training step (20 to a few hundred rows, any widths).
//
// Layout: row-major float32; x (M, K), w (K, N) as Keras keeps a Dense kernel (inputs, units),
// b (N), y (M, N). The three products of a step, each with the vector lanes along a contiguous axis:
//   forward   y  = act(x w + b)           tiles of 4 rows x 24 columns of y, the lanes along N
//   weights   dw = x^T d, db = sum_m d    tiles of 4 rows (inputs) x 24 columns of dw, along N
//   input     dx = d w^T                  tiles of 4 rows x 3 columns of dx: dot products along N
// where d = g * act'(y), the gradient at the pre-activation, written in terms of the output y
// (which the backward passes keep, as the conv kernels do). Every output element is computed by
// one tile, summing in a fixed order, so the result does not depend on how the tiles are split
// between threads (`DenseWork`): a run repeats exactly.
//
// The lanes are 8 floats (GCC/Clang vector extensions: AVX2 registers on x86-64, two NEON registers
// on arm64, ordinary code elsewhere); the multiply-adds are fused with FMA where the target has it.
// Widths that are not a multiple of 8 finish with scalar loops.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__FMA__) && defined(__AVX__)
#include <immintrin.h>
#endif

#include "conv_math.h"

namespace vaelab {

// The dense layers' activations: conv_math.h's three, and tanh (Burda et al.'s network).
constexpr int32_t kTanh = 3;

typedef float Lanes __attribute__((vector_size(32)));
constexpr Index kLanes = 8;

inline Lanes load(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, Lanes v) { std::memcpy(p, &v, sizeof v); }
inline Lanes splat(float s) { return Lanes{s, s, s, s, s, s, s, s}; }
inline Lanes fmadd(Lanes a, Lanes b, Lanes c) {
#if defined(__FMA__) && defined(__AVX__)
  return (Lanes)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}
inline float lane_sum(Lanes v) {
  float s[kLanes];
  std::memcpy(s, &v, sizeof v);
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

// tanh(v) to within a few units in the last place, as arithmetic compilers vectorise: Eigen's
// rational approximation (a degree-13 odd polynomial over a degree-6 even one, on [-7.9, 7.9],
// where tanh reaches 1 in float32), and v itself where |v| < 0.0004.
inline float tanh_rational(float v) {
  const float x = std::min(std::max(v, -7.90531110763549805f), 7.90531110763549805f);
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return std::fabs(v) < 0.0004f ? v : p / q;
}

// The dense activations, as conv_math.h's Act: apply(v), and the slope in terms of the output y.
template <int32_t A>
struct DenseAct {
  static float apply(float v) { return A == kTanh ? tanh_rational(v) : Act<A>::apply(v); }
  static float slope(float y) { return A == kTanh ? 1.f - y * y : Act<A>::slope(y); }
};

inline bool valid_dense_activation(int32_t act) { return act >= kLinear && act <= kTanh; }

// Calls fn(DenseAct<act>{}) (act valid: the FFI handlers check it).
template <class Fn>
void with_dense_activation(int32_t act, Fn&& fn) {
  if (act == kTanh)
    fn(DenseAct<kTanh>{});
  else if (act == kRelu)
    fn(DenseAct<kRelu>{});
  else if (act == kSigmoid)
    fn(DenseAct<kSigmoid>{});
  else
    fn(DenseAct<kLinear>{});
}

// Calls fn(integral_constant<r>) for a runtime r in 1..4: the tiles' row counts are template arguments
// (the accumulators must be registers), the batch's last rows may number fewer than 4.
template <class Fn>
void with_rows(Index rows, Fn&& fn) {
  switch (rows) {
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    default: fn(std::integral_constant<int, 1>{}); break;
  }
}

constexpr Index kRows = 4;       // rows of a tile: of y and dx (batch rows), of dw (inputs)
constexpr Index kVectors = 3;    // vectors of 8 columns per tile of y and dw: 4 x 3 accumulators
constexpr Index kStrip = kVectors * kLanes;  // columns per tile of y and dw
constexpr Index kDots = 3;       // columns of dx per tile (rows of w)

// ---- tiles --------------------------------------------------------------------------------------

// y[i..i+R)[j..j+8V) = x[i..i+R) w[:, j..j+8V) + b[j..j+8V)
template <int R, int V>
inline void forward_tile(const float* x, const float* w, const float* b, float* y, Index K, Index N, Index i,
                         Index j) {
  Lanes acc[R][V];
  for (int v = 0; v < V; ++v) {
    const Lanes bias = load(b + j + v * kLanes);
    for (int r = 0; r < R; ++r) acc[r][v] = bias;
  }
  const float* xi = x + i * K;
  const float* wj = w + j;
  for (Index k = 0; k < K; ++k) {
    Lanes wv[V];
    for (int v = 0; v < V; ++v) wv[v] = load(wj + k * N + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const Lanes xs = splat(xi[r * K + k]);
      for (int v = 0; v < V; ++v) acc[r][v] = fmadd(xs, wv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) store(y + (i + r) * N + j + v * kLanes, acc[r][v]);
}

// dw[k..k+R)[j..j+8V) = x[:, k..k+R)^T d[:, j..j+8V), summed over the M rows in order
template <int R, int V>
inline void weights_tile(const float* x, const float* d, float* dw, Index M, Index K, Index N, Index k, Index j) {
  Lanes acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = Lanes{};
  for (Index m = 0; m < M; ++m) {
    Lanes dv[V];
    for (int v = 0; v < V; ++v) dv[v] = load(d + m * N + j + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const Lanes xs = splat(x[m * K + k + r]);
      for (int v = 0; v < V; ++v) acc[r][v] = fmadd(xs, dv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) store(dw + (k + r) * N + j + v * kLanes, acc[r][v]);
}

// dx[i..i+R)[c..c+C) = d[i..i+R) w[c..c+C)^T: R x C dot products of length N, the lanes along N
template <int R, int C>
inline void input_tile(const float* d, const float* w, float* dx, Index K, Index N, Index i, Index c) {
  Lanes acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < C; ++q) acc[r][q] = Lanes{};
  Index n = 0;
  for (; n + kLanes <= N; n += kLanes) {
    Lanes wv[C];
    for (int q = 0; q < C; ++q) wv[q] = load(w + (c + q) * N + n);
    for (int r = 0; r < R; ++r) {
      const Lanes dv = load(d + (i + r) * N + n);
      for (int q = 0; q < C; ++q) acc[r][q] = fmadd(dv, wv[q], acc[r][q]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < C; ++q) {
      float s = lane_sum(acc[r][q]);
      for (Index t = n; t < N; ++t) s += d[(i + r) * N + t] * w[(c + q) * N + t];
      dx[(i + r) * K + c + q] = s;
    }
}

// ---- the three passes, over a range of work units -------------------------------------------------

// How a pass is cut into units for threads: the forward and weights passes by strips of kStrip
// columns (the last strip also takes the columns past the last whole vector), the input pass by
// groups of kDots columns of dx.
struct DenseWork {
  static Index strips(Index N) { return std::max<Index>(1, (N + kStrip - 1) / kStrip); }
  static Index dot_groups(Index K) { return (K + kDots - 1) / kDots; }
};

// Columns [j0, j1) of y = act(x w + b), all M rows; s indexes strips.
template <class A>
void dense_forward(const float* x, const float* w, const float* b, float* y, Index M, Index K, Index N, Index s0,
                   Index s1) {
  const Index whole = N / kLanes * kLanes;  // columns in whole vectors
  const Index j0 = std::min(s0 * kStrip, N), j1 = s1 >= DenseWork::strips(N) ? N : std::min(s1 * kStrip, N);
  for (Index j = j0; j < std::min(j1, whole);) {
    const Index v = std::min<Index>(kVectors, (std::min(j1, whole) - j) / kLanes);
    for (Index i = 0; i < M; i += kRows)
      with_rows(std::min(kRows, M - i), [&](auto rows) {
        constexpr int R = decltype(rows)::value;
        if (v == 3)
          forward_tile<R, 3>(x, w, b, y, K, N, i, j);
        else if (v == 2)
          forward_tile<R, 2>(x, w, b, y, K, N, i, j);
        else
          forward_tile<R, 1>(x, w, b, y, K, N, i, j);
      });
    j += v * kLanes;
  }
  for (Index j = std::max(j0, whole); j < j1; ++j)  // the columns past the last whole vector
    for (Index i = 0; i < M; ++i) {
      float s = b[j];
      for (Index k = 0; k < K; ++k) s += x[i * K + k] * w[k * N + j];
      y[i * N + j] = s;
    }
  for (Index i = 0; i < M; ++i) {
    float* yi = y + i * N;
#pragma omp simd
    for (Index j = j0; j < j1; ++j) yi[j] = A::apply(yi[j]);
  }
}

// d = g * act'(y), (M, N): the gradient at the pre-activation.
template <class A>
void pre_activation_gradient(const float* y, const float* g, float* d, Index count) {
#pragma omp simd
  for (Index t = 0; t < count; ++t) d[t] = g[t] * A::slope(y[t]);
}

// Columns [j0, j1) (strips s0..s1) of dw = x^T d and of db = sum over rows of d.
inline void dense_weights(const float* x, const float* d, float* dw, float* db, Index M, Index K, Index N, Index s0,
                          Index s1) {
  const Index whole = N / kLanes * kLanes;
  const Index j0 = std::min(s0 * kStrip, N), j1 = s1 >= DenseWork::strips(N) ? N : std::min(s1 * kStrip, N);
  for (Index j = j0; j < std::min(j1, whole);) {
    const Index v = std::min<Index>(kVectors, (std::min(j1, whole) - j) / kLanes);
    for (Index k = 0; k < K; k += kRows)
      with_rows(std::min(kRows, K - k), [&](auto rows) {
        constexpr int R = decltype(rows)::value;
        if (v == 3)
          weights_tile<R, 3>(x, d, dw, M, K, N, k, j);
        else if (v == 2)
          weights_tile<R, 2>(x, d, dw, M, K, N, k, j);
        else
          weights_tile<R, 1>(x, d, dw, M, K, N, k, j);
      });
    j += v * kLanes;
  }
  for (Index j = std::max(j0, whole); j < j1; ++j)
    for (Index k = 0; k < K; ++k) {
      float s = 0.f;
      for (Index m = 0; m < M; ++m) s += x[m * K + k] * d[m * N + j];
      dw[k * N + j] = s;
    }
  for (Index j = j0; j < j1; ++j) db[j] = 0.f;
  for (Index m = 0; m < M; ++m)
#pragma omp simd
    for (Index j = j0; j < j1; ++j) db[j] += d[m * N + j];
}

// Columns c0 * kDots .. of dx = d w^T (groups g0..g1 of kDots columns), all M rows.
inline void dense_input(const float* d, const float* w, float* dx, Index M, Index K, Index N, Index g0, Index g1) {
  const Index c1 = std::min(g1 * kDots, K);
  for (Index c = g0 * kDots; c < c1; c += kDots) {
    const Index cols = std::min(kDots, c1 - c);
    for (Index i = 0; i < M; i += kRows)
      with_rows(std::min(kRows, M - i), [&](auto rows) {
        constexpr int R = decltype(rows)::value;
        if (cols == 3)
          input_tile<R, 3>(d, w, dx, K, N, i, c);
        else if (cols == 2)
          input_tile<R, 2>(d, w, dx, K, N, i, c);
        else
          input_tile<R, 1>(d, w, dx, K, N, i, c);
      });
  }
}

}  // namespace vaelab
