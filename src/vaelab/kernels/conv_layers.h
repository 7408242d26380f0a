// The three layer kinds of conv_math.h, forward and backward, over a range [lo, hi) of images.
//
// Every function handles whole images, so a caller can split a batch between threads. The weight
// gradients are added into `dw`, `db` (the caller's partial sums for its range); everything else
// is written. Shapes are checked by the caller (conv_ffi.cc); here they are trusted.
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
        with_activation(act, [&](auto a) {
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
              y[out + j * F + f] = a.apply(best + b[f]);
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
    with_activation(act, [&](auto act) {
    for (int i = 0; i < ph; ++i)
      for (int j = 0; j < pw; ++j) {
        const Index k = (Index(i) * pw + j) * F;
        float v[F];
        int32_t phase[F];
#pragma omp simd
        for (int f = 0; f < F; ++f) v[f] = g[k + f] * act.slope(y[k + f]);
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

  // With many input channels, visiting only the non-zero values of the full-resolution gradient
  // pays: one pixel per pooling window and output channel f, whose gradient v adds v x (its 3x3
  // neighbourhood in x) to the kernel gradient and v x kernel[., ., :, f] to the input gradient,
  // with the vector lanes over the input channels; a quarter of the dense work, or less where relu
  // is off. With few input channels, dense loops over the full-resolution gradient fill the lanes.
  static constexpr bool kSparse = C >= 8;

  // visit(v, f, pixel) for every non-zero gradient v at output channel f, where `pixel` is the
  // window's maximum pixel (row * (w + 2) + column) in the image padded by one pixel, which is also
  // where its 3x3 neighbourhood starts; db[f] += v for all.
  template <class Visit>
  static void for_maxima(const float* y, const int8_t* arg, const float* g, int32_t act, int h, int wd, float* db,
                         Visit&& visit) {
    const int pw = wd / 2, wp = wd + 2;
    float sum[F] = {};  // db's part, in registers
    with_activation(act, [&](auto act) {
      for (int i = 0; i < h / 2; ++i)
        for (int j = 0; j < pw; ++j)
          for (int f = 0; f < F; ++f) {
            const Index k = (Index(i) * pw + j) * F + f;
            const float v = g[k] * act.slope(y[k]);
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
        with_activation(act, [&](auto act) {
          float acc[T][C * F] = {}, sum[F] = {};
          for (int i = 0; i < h / 2; ++i)
            for (int j = 0; j < pw; ++j) {
              const Index k = (Index(i) * pw + j) * F;
              float v[F];
              int32_t phase[F];  // int8 and float in one loop would make compilers pick narrow vectors
#pragma omp simd
              for (int f = 0; f < F; ++f) v[f] = gi[k + f] * act.slope(yi[k + f]);
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

// conv3x3 "same" + bias + activation. Shapes: x (n, h, w, C), kernel (3, 3, C, F), y (n, h, w, F).
template <int C, int F>
struct Conv {
  static void forward(const float* x, const float* w, const float* b, int32_t act, int h, int wd, float* y, Index lo,
                      Index hi) {
    const int wp = wd + 2;
    std::vector<float> xp(Index(h + 2) * wp * C);
    for (Index n = lo; n < hi; ++n) {
      pad_image<C>(x + n * h * wd * C, h, wd, 1, xp.data());
      float* yi = y + n * h * wd * F;
      for (int r = 0; r < h; ++r)
        conv_row<C, F, 3, 3, false>(xp.data() + Index(r) * wp * C, Index(wp) * C, C, w, wd, yi + Index(r) * wd * F, F);
      add_bias_activate<F>(yi, Index(h) * wd, b, act);
    }
  }

  // gz = g * act'(y) for one image, with `border` zero pixels around it.
  static void gradient(const float* y, const float* g, int32_t act, int h, int wd, int border, float* gz, float* db) {
    const int wp = wd + 2 * border;
    if (border) std::fill(gz, gz + Index(h + 2 * border) * wp * F, 0.f);
    float sum[F] = {};  // db's part, in registers
    with_activation(act, [&](auto act) {
      for (int r = 0; r < h; ++r)
        for (int s = 0; s < wd; ++s) {
          const Index k = (Index(r) * wd + s) * F;
          float* out = gz + (Index(r + border) * wp + s + border) * F;
#pragma omp simd
          for (int f = 0; f < F; ++f) out[f] = g[k + f] * act.slope(y[k + f]);
#pragma omp simd
          for (int f = 0; f < F; ++f) sum[f] += out[f];
        }
    });
    if (db)
      for (int f = 0; f < F; ++f) db[f] += sum[f];
  }

  static void weights(const float* x, const float* y, const float* g, int32_t act, int h, int wd, float* dw, float* db,
                      Index lo, Index hi) {
    const int wp = wd + 2;
    std::vector<float> xp(Index(h + 2) * wp * C), gz(Index(h) * wd * F);
    const std::vector<Index> taps = kernel_taps(wp, C);
    for (Index n = lo; n < hi; ++n) {
      gradient(y + n * h * wd * F, g + n * h * wd * F, act, h, wd, 0, gz.data(), db);
      pad_image<C>(x + n * h * wd * C, h, wd, 1, xp.data());
      weight_gradient<C, F, 9>(xp.data(), taps.data(), Index(wp) * C, C, gz.data(), Index(wd) * F, F, h, wd, dw);
    }
  }

  static void input(const float* w, const float* y, const float* g, int32_t act, int h, int wd, float* dx, Index lo,
                    Index hi) {
    const int wp = wd + 2;
    const std::vector<float> wt = flip_kernel<C, F>(w);
    std::vector<float> gzp(Index(h + 2) * wp * F);
    for (Index n = lo; n < hi; ++n) {
      gradient(y + n * h * wd * F, g + n * h * wd * F, act, h, wd, 1, gzp.data(), nullptr);
      for (int r = 0; r < h; ++r)
        conv_row<F, C, 3, 3, false>(gzp.data() + Index(r) * wp * F, Index(wp) * F, F, wt.data(), wd,
                                    dx + (n * h + r) * wd * C, C);
    }
  }
};

// Where upconv's output phase p (output rows 2a + p) reads the low-resolution input, for a 3x3
// kernel applied to the 2x upsampled image with `pad` zero pixels (1: "same", 0: "valid"):
// kernel row d reads low-resolution row a + floor((p - pad + d) / 2) = a + first(p) + tap(p, d),
// with tap(p, d) in {0, 1}, so each phase is a 2x2 convolution.
struct UpGeometry {
  int h, w, pad;  // the low-resolution input's size; pad as above
  static int floor_half(int v) { return v >= 0 ? v / 2 : -((1 - v) / 2); }
  int first(int p) const { return floor_half(p - pad); }
  int tap(int p, int d) const { return floor_half(p - pad + d) - first(p); }
  int shift(int p) const { return first(p) + 1; }  // the same, in the input padded by one pixel
  int out_h() const { return 2 * h + 2 * pad - 2; }
  int out_w() const { return 2 * w + 2 * pad - 2; }
};

// The sub-pixel kernels wc[p][q][j][k][c][f]: the sum of the 3x3 kernel's taps (d, e) with
// tap(p, d) = j and tap(q, e) = k.
template <int C, int F>
std::vector<float> subpixel_kernels(const float* w, const UpGeometry& g) {
  std::vector<float> wc(16 * C * F, 0.f);
  for (int p = 0; p < 2; ++p)
    for (int q = 0; q < 2; ++q)
      for (int d = 0; d < 3; ++d)
        for (int e = 0; e < 3; ++e) {
          float* out = wc.data() + ((((p * 2 + q) * 2 + g.tap(p, d)) * 2 + g.tap(q, e)) * C * F);
          for (int k = 0; k < C * F; ++k) out[k] += w[(d * 3 + e) * C * F + k];
        }
  return wc;
}

// The kernel gradient from the sub-pixel kernels' gradients (the transpose of subpixel_kernels).
template <int C, int F>
void kernel_from_subpixel(const float* dwc, const UpGeometry& g, float* dw) {
  std::fill(dw, dw + 9 * C * F, 0.f);
  for (int p = 0; p < 2; ++p)
    for (int q = 0; q < 2; ++q)
      for (int d = 0; d < 3; ++d)
        for (int e = 0; e < 3; ++e) {
          const float* in = dwc + ((((p * 2 + q) * 2 + g.tap(p, d)) * 2 + g.tap(q, e)) * C * F);
          for (int k = 0; k < C * F; ++k) dw[(d * 3 + e) * C * F + k] += in[k];
        }
}

// upsample2x (nearest) + conv3x3 (same or valid) + bias + activation. Shapes: x (n, h, w, C),
// kernel (3, 3, C, F), y (n, out_h, out_w, F).
template <int C, int F>
struct UpConv {
  // With few output channels, one product per input pixel against all 16 sub-pixel taps at once
  // ("project, then add shifted maps") keeps the vector lanes full; otherwise, convolve directly.
  static constexpr bool kProject = F < 4;

  // wc: subpixel_kernels<C, F>(kernel, g).
  static void forward(const float* x, const float* wc, const float* b, int32_t act, const UpGeometry& g, float* y,
                      Index lo, Index hi) {
    const int wp = g.w + 2, oh = g.out_h(), ow = g.out_w(), rows = oh / 2, cols = ow / 2;
    std::vector<float> xp(Index(g.h + 2) * wp * C), wproj, proj;
    if (kProject) {  // wproj[c][p][q][j][k][f] = wc[p][q][j][k][c][f]
      wproj.resize(16 * C * F);
      for (int t = 0; t < 16; ++t)
        for (int c = 0; c < C; ++c)
          for (int f = 0; f < F; ++f) wproj[(c * 16 + t) * F + f] = wc[(t * C + c) * F + f];
      proj.resize(Index(g.h + 2) * wp * 16 * F);
    }
    for (Index n = lo; n < hi; ++n) {
      pad_image<C>(x + n * g.h * g.w * C, g.h, g.w, 1, xp.data());
      float* yi = y + n * oh * ow * F;
      if (kProject) {
        for (int u = 0; u < g.h + 2; ++u)
          conv_row<C, 16 * F, 1, 1, false>(xp.data() + Index(u) * wp * C, 0, C, wproj.data(), wp,
                                           proj.data() + Index(u) * wp * 16 * F, 16 * F);
        for (int p = 0; p < 2; ++p)
          for (int q = 0; q < 2; ++q)
            for (int a = 0; a < rows; ++a) {
              // taps (j, k) of phase (p, q) at low-resolution pixel (a + shift(p) + j, bb + shift(q) + k)
              const float* top = proj.data() + (Index(a + g.shift(p)) * wp + g.shift(q)) * 16 * F + (p * 2 + q) * 4 * F;
              const float* bottom = top + Index(wp) * 16 * F;
              float* out = yi + (Index(2 * a + p) * ow + q) * F;
              for (int bb = 0; bb < cols; ++bb)
#pragma omp simd
                for (int f = 0; f < F; ++f)
                  out[2 * bb * F + f] = top[bb * 16 * F + f] + top[(bb + 1) * 16 * F + F + f] +
                                        bottom[bb * 16 * F + 2 * F + f] + bottom[(bb + 1) * 16 * F + 3 * F + f];
            }
      } else {
        for (int p = 0; p < 2; ++p)
          for (int q = 0; q < 2; ++q)
            for (int a = 0; a < rows; ++a)
              conv_row<C, F, 2, 2, false>(xp.data() + (Index(a + g.shift(p)) * wp + g.shift(q)) * C, Index(wp) * C, C,
                                          wc + (p * 2 + q) * 4 * C * F, cols,
                                          yi + (Index(2 * a + p) * ow + q) * F, 2 * F);
      }
      add_bias_activate<F>(yi, Index(oh) * ow, b, act);
    }
  }

  // dwc: the sub-pixel kernels' gradient (16 * C * F), turned into the kernel's by kernel_from_subpixel.
  static void weights(const float* x, const float* y, const float* g_out, int32_t act, const UpGeometry& g, float* dwc,
                      float* db, Index lo, Index hi) {
    const int wp = g.w + 2, oh = g.out_h(), ow = g.out_w();
    std::vector<float> xp(Index(g.h + 2) * wp * C), gz(Index(oh) * ow * F);
    for (Index n = lo; n < hi; ++n) {
      Conv<C, F>::gradient(y + n * oh * ow * F, g_out + n * oh * ow * F, act, oh, ow, 0, gz.data(), db);
      pad_image<C>(x + n * g.h * g.w * C, g.h, g.w, 1, xp.data());
      for (int p = 0; p < 2; ++p)
        for (int q = 0; q < 2; ++q) {
          const Index taps[4] = {0, C, Index(wp) * C, Index(wp + 1) * C};  // (j, k) in {0, 1}^2
          weight_gradient<C, F, 4>(xp.data() + (Index(g.shift(p)) * wp + g.shift(q)) * C, taps, Index(wp) * C, C,
                                   gz.data() + (Index(p) * ow + q) * F, 2 * Index(ow) * F, 2 * F, oh / 2, ow / 2,
                                   dwc + (p * 2 + q) * 4 * C * F);
        }
    }
  }

  // The input gradient, gathered phase by phase: dx[u] = sum_j gy_pq[u - shift(p) - j] wc_pq[j]^T,
  // with each phase's output gradient gy_pq padded by two pixels so that every read is in bounds.
  static void input(const float* wc, const float* y, const float* g_out, int32_t act, const UpGeometry& g, float* dx,
                    Index lo, Index hi) {
    const int oh = g.out_h(), ow = g.out_w(), rows = oh / 2, cols = ow / 2, cp = cols + 4;
    std::vector<float> wflip(16 * C * F), gyp(4 * Index(rows + 4) * cp * F);
    for (int t = 0; t < 4; ++t)  // wflip[pq][j][k][f][c] = wc[pq][1 - j][1 - k][c][f]
      for (int j = 0; j < 2; ++j)
        for (int k = 0; k < 2; ++k)
          for (int c = 0; c < C; ++c)
            for (int f = 0; f < F; ++f)
              wflip[(((t * 2 + j) * 2 + k) * F + f) * C + c] = wc[(((t * 2 + 1 - j) * 2 + 1 - k) * C + c) * F + f];
    for (Index n = lo; n < hi; ++n) {
      std::fill(gyp.begin(), gyp.end(), 0.f);
      const float* yi = y + n * oh * ow * F;
      const float* gi = g_out + n * oh * ow * F;
      with_activation(act, [&](auto act) {
        for (int r = 0; r < oh; ++r)
          for (int s = 0; s < ow; ++s) {
            const Index k = (Index(r) * ow + s) * F;
            float* out = gyp.data() + ((((r % 2) * 2 + s % 2) * Index(rows + 4) + r / 2 + 2) * cp + s / 2 + 2) * F;
#pragma omp simd
            for (int f = 0; f < F; ++f) out[f] = gi[k + f] * act.slope(yi[k + f]);
          }
      });
      float* dxi = dx + n * g.h * g.w * C;
      std::fill(dxi, dxi + Index(g.h) * g.w * C, 0.f);
      for (int p = 0; p < 2; ++p)
        for (int q = 0; q < 2; ++q) {
          const float* gt = gyp.data() + (p * 2 + q) * Index(rows + 4) * cp * F;
          for (int u = 1; u <= g.h; ++u)
            conv_row<F, C, 2, 2, true>(gt + (Index(u - g.shift(p) + 1) * cp + 2 - g.shift(q)) * F, Index(cp) * F, F,
                                       wflip.data() + (p * 2 + q) * 4 * C * F, g.w, dxi + Index(u - 1) * g.w * C, C);
        }
    }
  }
};

}  // namespace vaelab
