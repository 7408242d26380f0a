// The decoder's layer kinds of conv_math.h (conv and upconv; conv_pool is in conv_pool.h), forward
// and backward, over a range [lo, hi) of images.
//
// Every function handles whole images, so a caller can split a batch between threads. The weight
// gradients are added into `dw`, `db` (the caller's partial sums for its range); everything else
// is written. Shapes are checked by the caller (conv_ffi.cc); here they are trusted.
#pragma once

#include <algorithm>

#include "conv_math.h"

namespace vaelab {

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
    with_activation(act, [&](auto activation) {
      for (int r = 0; r < h; ++r)
        for (int s = 0; s < wd; ++s) {
          const Index k = (Index(r) * wd + s) * F;
          float* out = gz + (Index(r + border) * wp + s + border) * F;
#pragma omp simd
          for (int f = 0; f < F; ++f) out[f] = g[k + f] * activation.slope(y[k + f]);
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
  // The four phases' gradients are stored side by side as 4F channels of one low-resolution image
  // ("space to depth"); where all phases read with the same shift ("valid" padding), one 2x2
  // convolution over those 4F channels computes dx in one pass, else each phase adds its own.
  static void input(const float* wc, const float* y, const float* g_out, int32_t act, const UpGeometry& g, float* dx,
                    Index lo, Index hi) {
    const int oh = g.out_h(), ow = g.out_w(), rows = oh / 2, cols = ow / 2, cp = cols + 4;
    const bool one_pass = g.shift(0) == g.shift(1);
    std::vector<float> wflip(16 * C * F), gyp(Index(rows + 4) * cp * 4 * F);
    for (int t = 0; t < 4; ++t)  // wflip[j][k][pq][f][c] = wc[pq][1 - j][1 - k][c][f]
      for (int j = 0; j < 2; ++j)
        for (int k = 0; k < 2; ++k)
          for (int c = 0; c < C; ++c)
            for (int f = 0; f < F; ++f)
              wflip[((((j * 2 + k) * 4 + t) * F + f) * C + c)] = wc[(((t * 2 + 1 - j) * 2 + 1 - k) * C + c) * F + f];
    std::vector<float> wphase(one_pass ? 0 : 16 * C * F);  // [pq][j][k][f][c]
    for (int t = 0; t < 4 && !one_pass; ++t)
      for (int jk = 0; jk < 4; ++jk)
        std::copy_n(wflip.data() + (jk * 4 + t) * F * C, F * C, wphase.data() + (t * 4 + jk) * F * C);
    for (Index n = lo; n < hi; ++n) {
      std::fill(gyp.begin(), gyp.end(), 0.f);
      const float* yi = y + n * oh * ow * F;
      const float* gi = g_out + n * oh * ow * F;
      with_activation(act, [&](auto activation) {  // gyp[a + 2][b + 2][p][q][f] = gz[2a + p][2b + q][f]
        for (int r = 0; r < oh; ++r)
          for (int s = 0; s < ow; ++s) {
            const Index k = (Index(r) * ow + s) * F;
            float* out = gyp.data() + ((Index(r / 2 + 2) * cp + s / 2 + 2) * 4 + (r % 2) * 2 + s % 2) * F;
#pragma omp simd
            for (int f = 0; f < F; ++f) out[f] = gi[k + f] * activation.slope(yi[k + f]);
          }
      });
      float* dxi = dx + n * g.h * g.w * C;
      if (one_pass) {
        const int shift = g.shift(0);
        for (int u = 1; u <= g.h; ++u)
          conv_row<4 * F, C, 2, 2, false>(gyp.data() + (Index(u - shift + 1) * cp + 2 - shift) * 4 * F,
                                          Index(cp) * 4 * F, 4 * F, wflip.data(), g.w, dxi + Index(u - 1) * g.w * C, C);
        continue;
      }
      std::fill(dxi, dxi + Index(g.h) * g.w * C, 0.f);
      for (int p = 0; p < 2; ++p)
        for (int q = 0; q < 2; ++q) {
          const float* gt = gyp.data() + (p * 2 + q) * F;  // this phase's channels, 4F apart per pixel
          for (int u = 1; u <= g.h; ++u)
            conv_row<F, C, 2, 2, true>(gt + (Index(u - g.shift(p) + 1) * cp + 2 - g.shift(q)) * 4 * F,
                                       Index(cp) * 4 * F, 4 * F, wphase.data() + (p * 2 + q) * 4 * C * F, g.w,
                                       dxi + Index(u - 1) * g.w * C, C);
        }
    }
  }
};

}  // namespace vaelab
