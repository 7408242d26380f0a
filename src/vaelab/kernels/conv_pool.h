// conv_pool, the encoder's layers: conv3x3 "same" + bias + activation + 2x2 max-pooling, forward
// and backward, over a range [lo, hi) of images (see conv_layers.h for the conventions).
#pragma once

#include <algorithm>

#include "conv_math.h"

namespace vaelab {

// conv3x3 "same" + bias + activation + 2x2 max-pooling. Shapes: x (n, h, w, C), kernel (3, 3, C, F),
// y and arg (n, h/2, w/2, F); h and w even. arg holds which pixel of each 2x2 window was the
// maximum (phase 2*row + column, the first one on ties, as Keras' MaxPooling2D chooses): the
// backward passes route the gradient through it.
template <int C, int F>
struct ConvPool {
  static void forward(const float* x, const float* w, const float* b, int32_t act, int h, int wd, float* y,
                      int8_t* arg, Index lo, Index hi) {
    const int ph = h / 2, pw = wd / 2, wp = wd + 2;
    std::vector<float> xp(Index(h + 2) * wp * C), rows(2 * Index(wd) * F);
    for (Index n = lo; n < hi; ++n) {
      pad_image<C>(x + n * h * wd * C, h, wd, 1, xp.data());
      for (int i = 0; i < ph; ++i) {
        for (int d = 0; d < 2; ++d)
          conv_row<C, F, 3, 3, false>(xp.data() + Index(2 * i + d) * wp * C, Index(wp) * C, C, w, wd,
                                      rows.data() + Index(d) * wd * F, F);
        const Index out = (n * ph + i) * pw * F;
        with_activation(act, [&](auto activation) {
          for (int j = 0; j < pw; ++j) {
            const float* r0 = rows.data() + Index(2 * j) * F;
            const float* r1 = r0 + Index(wd) * F;
            float phase[F];
#pragma omp simd
            for (int f = 0; f < F; ++f) {  // branch-free: which pixel is the maximum is data, not predictable
              const float best = std::max(std::max(r0[f], r0[F + f]), std::max(r1[f], r1[F + f]));
              float first = r1[f] == best ? 2.f : 3.f;
              first = r0[F + f] == best ? 1.f : first;
              phase[f] = r0[f] == best ? 0.f : first;
              y[out + j * F + f] = activation.apply(best + b[f]);
            }
#pragma omp simd
            for (int f = 0; f < F; ++f) arg[out + j * F + f] = int8_t(phase[f]);
          }
        });
      }
    }
  }

  // gz = the gradient at the convolution's full-resolution output: the pooled gradient times the
  // activation's slope, at each window's maximum, zero elsewhere. Written into gz (h, w, F) with
  // `border` zero pixels around it.
  static void full_gradient(const float* y, const int8_t* arg, const float* g, int32_t act, int h, int wd, int border,
                            float* gz) {
    const int ph = h / 2, pw = wd / 2, wp = wd + 2 * border;
    if (border) std::fill(gz, gz + Index(h + 2 * border) * wp * F, 0.f);
    with_activation(act, [&](auto activation) {
      for (int i = 0; i < ph; ++i)
        for (int j = 0; j < pw; ++j) {
          const Index k = (Index(i) * pw + j) * F;
          float v[F];
          int32_t phase[F];
#pragma omp simd
          for (int f = 0; f < F; ++f) v[f] = g[k + f] * activation.slope(y[k + f]);
#pragma omp simd
          for (int f = 0; f < F; ++f) phase[f] = arg[k + f];
          for (int a = 0; a < 4; ++a) {
            float* out = gz + (Index(2 * i + a / 2 + border) * wp + 2 * j + a % 2 + border) * F;
#pragma omp simd
            for (int f = 0; f < F; ++f) out[f] = phase[f] == a ? v[f] : 0.f;
          }
        }
    });
  }

  // With many input channels, visiting only the values of the full-resolution gradient that can be
  // non-zero pays: one pixel per pooling window and output channel f, whose gradient v adds v x (its
  // 3x3 neighbourhood in x) to the kernel gradient and v x kernel[., ., :, f] to the input gradient,
  // with the vector lanes over the input channels: a quarter of the dense work. (Skipping v = 0, where
  // relu is off, costs more in mispredicted branches than it saves.) With few input channels, dense
  // loops over the full-resolution gradient fill the lanes instead.
  static constexpr bool kSparse = C >= 8;

  // visit(v, f, pixel) for the gradient v of each pooled value, at output channel f, where `pixel`
  // is its window's maximum (row * (w + 2) + column) in the image padded by one pixel, which is also
  // where the maximum's 3x3 neighbourhood starts; db[f] += v for all.
  template <class Visit>
  static void for_maxima(const float* y, const int8_t* arg, const float* g, int32_t act, int h, int wd, float* db,
                         Visit&& visit) {
    const int pw = wd / 2, wp = wd + 2;
    float sum[F] = {};  // db's part, in registers
    with_activation(act, [&](auto activation) {
      for (int i = 0; i < h / 2; ++i)
        for (int j = 0; j < pw; ++j)
          for (int f = 0; f < F; ++f) {
            const Index k = (Index(i) * pw + j) * F + f;
            const float v = g[k] * activation.slope(y[k]);
            sum[f] += v;
            visit(v, f, Index(2 * i + arg[k] / 2) * wp + 2 * j + arg[k] % 2);
          }
    });
    if (db)
      for (int f = 0; f < F; ++f) db[f] += sum[f];
  }

  static void weights(const float* x, const float* y, const int8_t* arg, const float* g, int32_t act, int h, int wd,
                      float* dw, float* db, Index lo, Index hi) {
    const int wp = wd + 2;
    const Index pooled = Index(h / 2) * (wd / 2) * F;
    const std::vector<Index> taps = kernel_taps(wp, C);
    std::vector<float> xp(Index(h + 2) * wp * C);
    if (kSparse) {
      std::vector<float> dwt(9 * F * C, 0.f);  // [t][f][c]
      for (Index n = lo; n < hi; ++n) {
        pad_image<C>(x + n * h * wd * C, h, wd, 1, xp.data());
        for_maxima(y + n * pooled, arg + n * pooled, g + n * pooled, act, h, wd, db, [&](float v, int f, Index pixel) {
          for (int t = 0; t < 9; ++t) {
            const float* xt = xp.data() + pixel * C + taps[t];
            float* acc = dwt.data() + (t * F + f) * C;
#pragma omp simd
            for (int c = 0; c < C; ++c) acc[c] += v * xt[c];
          }
        });
      }
      for (int t = 0; t < 9; ++t)
        for (int c = 0; c < C; ++c)
          for (int f = 0; f < F; ++f) dw[(t * C + c) * F + f] += dwt[(t * F + f) * C + c];
      return;
    }
    // Dense: each pooled pixel's gradient, masked to the window's pixels in turn, times their 3x3
    // neighbourhoods; the full-resolution gradient is never stored.
    constexpr int T = taps_per_pass(C, F, 9);
    const int pw = wd / 2;
    for (Index n = lo; n < hi; ++n) {
      pad_image<C>(x + n * h * wd * C, h, wd, 1, xp.data());
      const float *yi = y + n * pooled, *gi = g + n * pooled;
      const int8_t* ai = arg + n * pooled;
      for (int t0 = 0; t0 < 9; t0 += T)
        with_activation(act, [&](auto activation) {
          float acc[T][C * F] = {}, sum[F] = {};
          for (int i = 0; i < h / 2; ++i)
            for (int j = 0; j < pw; ++j) {
              const Index k = (Index(i) * pw + j) * F;
              float v[F];
              int32_t phase[F];  // int8 and float in one loop would make compilers pick narrow vectors
#pragma omp simd
              for (int f = 0; f < F; ++f) v[f] = gi[k + f] * activation.slope(yi[k + f]);
#pragma omp simd
              for (int f = 0; f < F; ++f) phase[f] = ai[k + f];
#pragma omp simd
              for (int f = 0; f < F; ++f) sum[f] += v[f];
              for (int a = 0; a < 4; ++a) {
                float ga[F];
#pragma omp simd
                for (int f = 0; f < F; ++f) ga[f] = phase[f] == a ? v[f] : 0.f;
                const float* xa = xp.data() + (Index(2 * i + a / 2) * wp + 2 * j + a % 2) * C;
                for (int t = 0; t < T; ++t)
                  for (int c = 0; c < C; ++c)
#pragma omp simd
                    for (int f = 0; f < F; ++f) acc[t][c * F + f] += xa[taps[t0 + t] + c] * ga[f];
              }
            }
          for (int t = 0; t < T; ++t)
            for (int k = 0; k < C * F; ++k) dw[(t0 + t) * C * F + k] += acc[t][k];
          if (t0 == 0)
            for (int f = 0; f < F; ++f) db[f] += sum[f];
        });
    }
  }

  static void input(const float* w, const float* y, const int8_t* arg, const float* g, int32_t act, int h, int wd,
                    float* dx, Index lo, Index hi) {
    const int wp = wd + 2;
    const Index pooled = Index(h / 2) * (wd / 2) * F;
    if (kSparse) {
      std::vector<float> wt(9 * F * C), dxp(Index(h + 2) * wp * C);  // wt[t][f][c] = w[t][c][f]
      for (int t = 0; t < 9; ++t)
        for (int c = 0; c < C; ++c)
          for (int f = 0; f < F; ++f) wt[(t * F + f) * C + c] = w[(t * C + c) * F + f];
      const std::vector<Index> taps = kernel_taps(wp, C);
      for (Index n = lo; n < hi; ++n) {
        std::fill(dxp.begin(), dxp.end(), 0.f);
        for_maxima(y + n * pooled, arg + n * pooled, g + n * pooled, act, h, wd, nullptr,
                   [&](float v, int f, Index pixel) {
                     for (int t = 0; t < 9; ++t) {
                       float* out = dxp.data() + pixel * C + taps[t];
                       const float* wv = wt.data() + (t * F + f) * C;
#pragma omp simd
                       for (int c = 0; c < C; ++c) out[c] += v * wv[c];
                     }
                   });
        for (int r = 0; r < h; ++r)
          std::copy_n(dxp.data() + (Index(r + 1) * wp + 1) * C, Index(wd) * C, dx + (n * h + r) * wd * C);
      }
      return;
    }
    const std::vector<float> wt = flip_kernel<C, F>(w);
    std::vector<float> gzp(Index(h + 2) * wp * F);
    for (Index n = lo; n < hi; ++n) {
      full_gradient(y + n * pooled, arg + n * pooled, g + n * pooled, act, h, wd, 1, gzp.data());
      for (int r = 0; r < h; ++r)
        conv_row<F, C, 3, 3, false>(gzp.data() + Index(r) * wp * F, Index(wp) * F, F, wt.data(), wd,
                                    dx + (n * h + r) * wd * C, C);
    }
  }
};

}  // namespace vaelab
