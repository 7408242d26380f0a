// The ConvNet's layers for one image at a time, as plain C++17 loops that compilers vectorise.
//
// Layout: images NHWC (row, column, channel), kernels HWIO ([3][3][C][F]), float32. Every loop nest
// keeps its innermost loop over a channel axis whose length is a template argument, so that at -O3
// with the host's instruction set (-march=native) it becomes vector code (AVX2/AVX-512, NEON) with
// the accumulators held in registers. One image's activations are a few kilobytes to ~50 KB, so
// each image is finished while it is still in the core's L1/L2 cache.
//
// The three layer kinds (see vaelab/layers.py for the same mathematics in keras.ops):
//   conv_pool  y = act(max over the 2x2 window of conv3x3_same(x, w) + b)  (act monotonic)
//   conv       y = act(conv3x3_same(x, w) + b)
//   upconv     y = act(conv3x3_{same|valid}(upsample2x_nearest(x), w) + b), computed at the low
//              resolution: output phase (p, q) (rows 2a+p, columns 2b+q) is a 2x2 convolution of x
//              with the 3x3 kernel's taps summed ("sub-pixel" kernels).
// Each has a forward pass and two backward passes: one for the weights (kernel and bias) and one
// for the input, kept apart so that the input gradient of the network's first layer, which nobody
// needs, is never computed.
#pragma once

#include <algorithm>
#include <cstring>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace vaelab {

using Index = std::ptrdiff_t;

enum Activation : int32_t { kLinear = 0, kRelu = 1, kSigmoid = 2 };

// e^v to within a few units in the last place, for v in [-87, 88] (clamped outside), as arithmetic
// that compilers vectorise (a call to libm's expf would not be): e^v = 2^n e^r with n = round(v /
// ln 2) and |r| <= ln(2) / 2, e^r by its degree-6 Taylor-like polynomial (Cephes' expf
// coefficients), and 2^n put straight into the float's exponent bits.
inline float exp_poly(float v) {
  v = std::min(std::max(v, -87.0f), 88.0f);
  const float round = 12582912.f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const float n = (v * 1.44269504f + round) - round;
  const float r = (v - n * 0.693359375f) - n * -2.12194440e-4f;  // ln 2 in two parts, for precision
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// An activation function y = apply(v), and its slope d apply / dv written in terms of the output y
// (what the backward passes keep): relu's is 1 where y > 0 (0 at 0, like jax.nn.relu), sigmoid's
// y (1 - y). A template, so that the loops around it are compiled once per activation, branch-free.
template <int32_t A>
struct Act {
  static float apply(float v) {
    if (A == kRelu) return v > 0.f ? v : 0.f;
    if (A == kSigmoid) return 1.f / (1.f + exp_poly(-v));
    return v;
  }
  static float slope(float y) {
    if (A == kRelu) return y > 0.f ? 1.f : 0.f;
    if (A == kSigmoid) return y * (1.f - y);
    return 1.f;
  }
};

// Calls fn(Act<act>{}) (act a valid Activation; the FFI handlers check it).
template <class Fn>
void with_activation(int32_t act, Fn&& fn) {
  if (act == kRelu)
    fn(Act<kRelu>{});
  else if (act == kSigmoid)
    fn(Act<kSigmoid>{});
  else
    fn(Act<kLinear>{});
}

// A stride-1 convolution for P output pixels p and CO output channels o, over input pixels
// `in_step` floats apart (CI channels each, or more, of which the first CI are read):
//   out[p * out_step + o] (=, or += if ACC)
//       sum_{i < KH, j < KW, c < CI} in[i * in_row + (p + j) * in_step + c] * w[((i * KW + j) * CI + c) * CO + o]
template <int CI, int CO, int KH, int KW, int P, bool ACC>
inline void conv_block(const float* in, Index in_row, Index in_step, const float* w, float* out, Index out_step) {
  float acc[P][CO];
  for (int p = 0; p < P; ++p)
    for (int o = 0; o < CO; ++o) acc[p][o] = 0.f;
  for (int i = 0; i < KH; ++i)
    for (int j = 0; j < KW; ++j)
      for (int c = 0; c < CI; ++c) {
        const float* wv = w + ((i * KW + j) * CI + c) * CO;
        for (int p = 0; p < P; ++p) {
          const float xv = in[i * in_row + (p + j) * in_step + c];
#pragma omp simd
          for (int o = 0; o < CO; ++o) acc[p][o] += xv * wv[o];
        }
      }
  for (int p = 0; p < P; ++p)
    for (int o = 0; o < CO; ++o) {
      if (ACC)
        out[p * out_step + o] += acc[p][o];
      else
        out[p * out_step + o] = acc[p][o];
    }
}

// conv_block over a row of n output pixels, in blocks of 8 or 7 pixels (the ConvNet's rows are 7,
// 8, 14 and 28 wide), then 4, 2, 1: many independent accumulators hide the latency of the fused
// multiply-adds, and at most 128 floats of them stay in registers.
template <int CI, int CO, int KH, int KW, bool ACC>
void conv_row(const float* in, Index in_row, Index in_step, const float* w, int n, float* out, Index out_step) {
  int p = 0;
  auto blocks = [&](auto pixels) {
    constexpr int P = decltype(pixels)::value;
    for (; p + P <= n; p += P)
      conv_block<CI, CO, KH, KW, P, ACC>(in + p * in_step, in_row, in_step, w, out + p * out_step, out_step);
  };
  if (CO > 16)
    blocks(std::integral_constant<int, 4>{});
  else if (n % 7 == 0)
    blocks(std::integral_constant<int, 7>{});
  else
    blocks(std::integral_constant<int, 8>{});
  blocks(std::integral_constant<int, 4>{});
  blocks(std::integral_constant<int, 2>{});
  blocks(std::integral_constant<int, 1>{});
}

// How many kernel taps weight_taps handles in one pass over the pixels: as many as keep the
// accumulators (taps x CI x CO floats) within about nine 16-float vectors, and divide `taps`.
constexpr int taps_per_pass(int ci, int co, int taps) {
  for (int t = taps; t > 1; --t)
    if (taps % t == 0 && t * ci * co <= 144) return t;
  return 1;
}

// The gradient of T kernel taps over a grid of rows x cols output pixels:
//   dw[(t * CI + c) * CO + o] += sum_{r, s} x[r * x_row + s * x_col + tap[t] + c] * g[r * g_row + s * g_col + o]
// The vector lanes run over the output channels, or over the input channels when there are few
// output channels.
template <int CI, int CO, int T>
void weight_taps(const float* x, const Index* tap, Index x_row, Index x_col, const float* g, Index g_row, Index g_col,
                 int rows, int cols, float* dw) {
  constexpr bool kLanesOut = CO >= 8;
  float acc[T][CI * CO];  // [t][c][o], or [t][o][c] when !kLanesOut
  for (int t = 0; t < T; ++t)
    for (int k = 0; k < CI * CO; ++k) acc[t][k] = 0.f;
  for (int r = 0; r < rows; ++r)
    for (int s = 0; s < cols; ++s) {
      const float* xv = x + r * x_row + s * x_col;
      const float* gv = g + r * g_row + s * g_col;
      for (int t = 0; t < T; ++t) {
        const float* xt = xv + tap[t];
        if (kLanesOut) {
          for (int c = 0; c < CI; ++c)
#pragma omp simd
            for (int o = 0; o < CO; ++o) acc[t][c * CO + o] += xt[c] * gv[o];
        } else {
          for (int o = 0; o < CO; ++o)
#pragma omp simd
            for (int c = 0; c < CI; ++c) acc[t][o * CI + c] += xt[c] * gv[o];
        }
      }
    }
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < CI; ++c)
      for (int o = 0; o < CO; ++o) dw[(t * CI + c) * CO + o] += kLanesOut ? acc[t][c * CO + o] : acc[t][o * CI + c];
}

// weight_taps over `taps` taps (offsets tap[0..taps)), taps_per_pass at a time; dw[t][c][o].
template <int CI, int CO, int TAPS>
void weight_gradient(const float* x, const Index* tap, Index x_row, Index x_col, const float* g, Index g_row,
                     Index g_col, int rows, int cols, float* dw) {
  constexpr int T = taps_per_pass(CI, CO, TAPS);
  for (int t = 0; t < TAPS; t += T)
    weight_taps<CI, CO, T>(x, tap + t, x_row, x_col, g, g_row, g_col, rows, cols, dw + t * CI * CO);
}

// xp = x (h, w, C) with a zero border of `pad` pixels: (h + 2 pad, w + 2 pad, C).
template <int C>
void pad_image(const float* x, int h, int w, int pad, float* xp) {
  const int wp = w + 2 * pad;
  for (Index k = 0; k < Index(h + 2 * pad) * wp * C; ++k) xp[k] = 0.f;
  for (int r = 0; r < h; ++r)
    for (Index k = 0; k < Index(w) * C; ++k) xp[(Index(r + pad) * wp + pad) * C + k] = x[Index(r) * w * C + k];
}

// y[k][f] = act(y[k][f] + b[f]) for k < pixels.
template <int F>
void add_bias_activate(float* y, Index pixels, const float* b, int32_t act) {
  with_activation(act, [&](auto activation) {
    for (Index k = 0; k < pixels; ++k)
#pragma omp simd
      for (int f = 0; f < F; ++f) y[k * F + f] = activation.apply(y[k * F + f] + b[f]);
  });
}

// The offsets of a 3x3 kernel's taps (i, j) in an image `row` pixels wide with `channels` channels.
inline std::vector<Index> kernel_taps(Index row, Index channels) {
  std::vector<Index> taps;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) taps.push_back((i * row + j) * channels);
  return taps;
}

// wt[i][j][f][c] = w[2 - i][2 - j][c][f]: the kernel that maps output gradients back to the input
// (a "same" 3x3 convolution's transpose is the same convolution with this kernel).
template <int C, int F>
std::vector<float> flip_kernel(const float* w) {
  std::vector<float> wt(9 * C * F);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      for (int c = 0; c < C; ++c)
        for (int f = 0; f < F; ++f) wt[((i * 3 + j) * F + f) * C + c] = w[(((2 - i) * 3 + 2 - j) * C + c) * F + f];
  return wt;
}

}  // namespace vaelab
