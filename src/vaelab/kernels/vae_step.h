// One whole training step of a dense VAE or IWAE with a Bernoulli likelihood, in one call: the forward pass,
// the loss, the backward pass and the optimizer's update of every parameter, in place.
//
// The network (vaelab.networks' mlp): x (B, D) -> hidden layers h_1..h_n (act) -> z_mean, z_log_var (L, linear);
// z (B K, L) = z_mean + exp(z_log_var / 2) eps; z -> the hidden layers mirrored (act) -> logits (D, linear) ->
// the pixels' means p = sigmoid(logits). eps (B K, L) and the (binarised) images x are JAX's: drawn by the
// model's own layers before the call, so a step uses exactly the random numbers of the XLA path.
//
// Per image i (codes k = 0..K-1 at rows i K + k), with Keras' clipped Bernoulli (vaelab.likelihoods):
//   log p(x|z)   ll_ik = sum_d x log c(p) + (1 - x) log(1 - c(p)),  c clips to [1e-7, 1 - 1e-7]
//   kl_i         sum_l (exp(lv) - lv + mu^2 - 1) / 2                 (the analytic KL, a metric of both)
//   vae  (K=1)   objective_i = -ll_i + w kl_i                        (w: the KL weight)
//   iwae         objective_i = -(logsumexp_k log w_ik - log K),
//                log w_ik = ll_ik + log N(z_ik; 0, I) - log N(z_ik; mu_i, exp(lv_i))
//   reconstruction_i = -mean_k ll_ik
// and the loss minimised is mean_i objective_i. The gradients are those jax.grad takes of that loss (the
// clip's zero slope outside its range, half at its ends, included); the updates are optimizer_math.h's.
// Every parameter is updated right after its gradient is complete and the backward pass has read it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "dense_math.h"
#include "optimizer_math.h"

namespace vaelab {

constexpr int32_t kObjectiveElbo = 0, kObjectiveIwae = 1;
constexpr int32_t kAdam = 0, kRmsprop = 1;
constexpr float kProbabilityClip = 1e-7f;  // Keras' clipping in binary cross-entropy

// log v for normal positive v to within a couple of units in the last place, as arithmetic that compilers
// vectorise: v = m 2^e with m in [sqrt(1/2), sqrt(2)), log m by Cephes' logf polynomial.
inline float log_poly(float v) {
  int32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  int32_t e = ((bits >> 23) & 0xff) - 126;
  bits = (bits & 0x807fffff) | 0x3f000000;  // the mantissa in [0.5, 1)
  float m;
  std::memcpy(&m, &bits, sizeof m);
  const float small = float(m < 0.707106781186547524f);  // (arithmetic, not a branch: the loops stay vector code)
  m = (m + small * m) - 1.f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m + -1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m + -1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m + -1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m + -2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  const float fe = float(e) - small;
  y += fe * -2.12194440e-4f;
  y += -0.5f * z;
  return (m + y) + fe * 0.693359375f;
}

// A dense layer's parameters and optimizer slots: kernel (in, out) and bias (out), each with its slots
// (Adam: m, v; RMSprop: the velocity in slot 0).
struct StepLayer {
  float* w;
  float* b;
  float* w_slot[2];
  float* b_slot[2];
  Index in, out;
};

// The optimizer: which, and its four scalars (optimizer_math.h's AdamScalars or RmspropScalars, in order).
struct StepOptimizer {
  int32_t kind;
  float scalars[4];
};

// A step's shape: the batch B, codes per image K, the hidden layers' count n and activation, the objective.
// The layers: encoder hidden 0..n-1, z_mean (n), z_log_var (n+1), decoder hidden n+2..2n+1, logits (2n+2).
struct StepNetwork {
  Index batch, samples, hidden;
  int32_t activation, objective;
  float kl_weight;
};

// Scratch memory of a step, kept between calls of one thread.
struct StepScratch {
  std::vector<std::vector<float>> acts;  // every layer's output, by layer
  std::vector<float> z, grad, grad2, dw, db, d;
};

// How a pass's work units (column strips, dot groups) are shared between threads: splitter(units, flops, work) calls
// work(u0, u1) over pieces that cover [0, units). Every output element is summed by one tile in a fixed order, so the
// split does not change the numbers (dense_math.h). The FFI handler shares with XLA's pool; alone, one thread.
using Splitter = std::function<void(Index, double, const std::function<void(Index, Index)>&)>;

inline void one_piece(Index units, double, const std::function<void(Index, Index)>& work) { work(0, units); }

inline void update(const StepOptimizer& opt, float* p, float* s0, float* s1, const float* g, Index n) {
  if (opt.kind == kAdam) {
    const AdamScalars s{opt.scalars[0], opt.scalars[1], opt.scalars[2], opt.scalars[3]};
    adam_update(p, s0, s1, g, p, s0, s1, s, 0, n);
  } else {
    const RmspropScalars s{opt.scalars[0], opt.scalars[1], opt.scalars[2], opt.scalars[3]};
    rmsprop_update(p, s0, g, p, s0, s, 0, n);
  }
}

// y = act(x w + b), all rows.
inline void layer_forward(const StepLayer& l, int32_t act, const float* x, float* y, Index rows, const Splitter& split) {
  with_dense_activation(act, [&](auto a) {
    split(DenseWork::strips(l.out), 2.0 * rows * l.in * l.out, [&](Index s0, Index s1) {
      dense_forward<decltype(a)>(x, l.w, l.b, y, rows, l.in, l.out, s0, s1);
    });
  });
}

// Given g = dL/dy (overwritten by dL/d pre-activation), the layer's gradients, dL/dx into dx when dx is not
// null (accumulated if `add`), then the layer's update.
inline void layer_backward(const StepLayer& l, int32_t act, const StepOptimizer& opt, const float* x, const float* y,
                           float* g, float* dx, bool add, Index rows, StepScratch& s, const Splitter& split) {
  if (act != kLinear)
    with_dense_activation(act, [&](auto a) { pre_activation_gradient<decltype(a)>(y, g, g, rows * l.out); });
  s.dw.resize(l.in * l.out);
  s.db.resize(l.out);
  const double flops = 2.0 * rows * l.in * l.out;
  split(DenseWork::strips(l.out), flops, [&](Index s0, Index s1) {
    dense_weights(x, g, s.dw.data(), s.db.data(), rows, l.in, l.out, s0, s1);
  });
  if (dx) {
    float* into = dx;
    if (add) {
      s.d.resize(rows * l.in);
      into = s.d.data();
    }
    split(DenseWork::dot_groups(l.in), flops, [&](Index g0, Index g1) {
      dense_input(g, l.w, into, rows, l.in, l.out, g0, g1);
    });
    if (add)
      for (Index t = 0; t < rows * l.in; ++t) dx[t] += s.d[t];
  }
  update(opt, l.w, l.w_slot[0], l.w_slot[1], s.dw.data(), l.in * l.out);
  update(opt, l.b, l.b_slot[0], l.b_slot[1], s.db.data(), l.out);
}

// The clip's slope at p, as jax.grad takes it: 1 inside, 0 outside, 1/2 on either end (max and min split ties).
inline float clip_slope(float p) {
  const float lo = kProbabilityClip, hi = 1.f - kProbabilityClip;
  return float(p > lo) * float(p < hi) + 0.5f * (float(p == lo) + float(p == hi));
}

// One step. x (B, D), eps (B K, L); writes reconstruction, kl and objective (B each), updates every layer.
inline void vae_step(const StepNetwork& net, StepLayer* layers, const StepOptimizer& opt, const float* x,
                     const float* eps, float* reconstruction, float* kl, float* objective, StepScratch& s,
                     const Splitter& split = one_piece) {
  const Index B = net.batch, K = net.samples, n = net.hidden, R = B * K;
  const Index count = 2 * n + 3, mu_at = n, lv_at = n + 1, out_at = 2 * n + 2;
  const Index D = layers[0].in, L = layers[mu_at].out;
  s.acts.resize(count);
  for (Index j = 0; j < count; ++j) s.acts[j].resize((j < n + 2 ? B : R) * layers[j].out);
  auto input_of = [&](Index j) -> const float* {
    if (j == 0) return x;
    if (j == lv_at) return j - 2 >= 0 ? s.acts[j - 2].data() : x;
    if (j == mu_at) return j - 1 >= 0 ? s.acts[j - 1].data() : x;
    if (j == n + 2) return s.z.data();
    return s.acts[j - 1].data();
  };
  auto act_of = [&](Index j) { return (j < n || (j > lv_at && j < out_at)) ? net.activation : kLinear; };
  // forward: the encoder, the codes, the decoder (to the logits)
  for (Index j = 0; j < n + 2; ++j) layer_forward(layers[j], act_of(j), input_of(j), s.acts[j].data(), B, split);
  const float* mu = s.acts[mu_at].data();
  const float* lv = s.acts[lv_at].data();
  s.z.resize(R * L);
  for (Index r = 0; r < R; ++r)
    for (Index l = 0; l < L; ++l) {
      const Index i = r / K;
      s.z[r * L + l] = mu[i * L + l] + std::exp(0.5f * lv[i * L + l]) * eps[r * L + l];
    }
  for (Index j = n + 2; j < count; ++j) layer_forward(layers[j], act_of(j), input_of(j), s.acts[j].data(), R, split);
  // the likelihood, and its gradient at the logits (per row, unscaled): d log p(x|z) / d logits
  float* logits = s.acts[out_at].data();
  s.grad.resize(R * D);
  std::vector<float> ll(R);
  // Binary images (binarised ones) need one logarithm per pixel: for x in {0, 1}, x log c + (1 - x) log(1 - c)
  // is log(x c + (1 - x)(1 - c)), the same float.
  bool binary = true;
  for (Index t = 0; t < B * D; ++t) binary = binary && (x[t] == 0.f || x[t] == 1.f);
  for (Index r = 0; r < R; ++r) {
    const float* xi = x + (r / K) * D;
    float* a = logits + r * D;
    float* g = s.grad.data() + r * D;
    float sum = 0.f;
    if (binary) {
#pragma omp simd reduction(+ : sum)
      for (Index d = 0; d < D; ++d) {
        const float p = 1.f / (1.f + exp_poly(-a[d]));
        const float c = std::min(std::max(p, kProbabilityClip), 1.f - kProbabilityClip);
        sum += log_poly(xi[d] * c + (1.f - xi[d]) * (1.f - c));
        g[d] = (xi[d] / c - (1.f - xi[d]) / (1.f - c)) * clip_slope(p) * (p * (1.f - p));
      }
    } else {
#pragma omp simd reduction(+ : sum)
      for (Index d = 0; d < D; ++d) {
        const float p = 1.f / (1.f + exp_poly(-a[d]));
        const float c = std::min(std::max(p, kProbabilityClip), 1.f - kProbabilityClip);
        sum += xi[d] * log_poly(c) + (1.f - xi[d]) * log_poly(1.f - c);
        g[d] = (xi[d] / c - (1.f - xi[d]) / (1.f - c)) * clip_slope(p) * (p * (1.f - p));
      }
    }
    ll[r] = sum;
  }
  // the per-image losses, and each row's weight in the loss's gradient: c_r = dL / d ll_r
  std::vector<float> c(R), logq_slope(R);  // (IWAE) dL / d log w_r
  const float scale = 1.f / float(B);
  for (Index i = 0; i < B; ++i) {
    float k_sum = 0.f;
    for (Index l = 0; l < L; ++l) {
      const float m = mu[i * L + l], v = lv[i * L + l];
      k_sum += 0.5f * ((0.f - v) + std::exp(v) + m * m - 1.f);
    }
    kl[i] = k_sum;
    float rec = 0.f;
    for (Index k = 0; k < K; ++k) rec += ll[i * K + k];
    reconstruction[i] = -(rec / float(K));
    if (net.objective == kObjectiveElbo) {
      objective[i] = -ll[i * K] + net.kl_weight * k_sum;
      for (Index k = 0; k < K; ++k) c[i * K + k] = -scale / float(K);
      continue;
    }
    float most = -INFINITY;
    std::vector<float>& logw = logq_slope;  // (reused: log w first, the slope after)
    for (Index k = 0; k < K; ++k) {
      const Index r = i * K + k;
      float log_p = 0.f, log_q = 0.f;
      for (Index l = 0; l < L; ++l) {
        const float zv = s.z[r * L + l], v = lv[i * L + l];
        const float t = (zv - mu[i * L + l]) * std::exp(-0.5f * v);
        log_p += 1.8378770664093453f + 0.f + zv * zv;
        log_q += 1.8378770664093453f + v + t * t;
      }
      logw[r] = ll[r] + -0.5f * log_p - -0.5f * log_q;
      most = std::max(most, logw[r]);
    }
    float total = 0.f;
    for (Index k = 0; k < K; ++k) total += std::exp(logw[i * K + k] - most);
    objective[i] = -((most + std::log(total)) - std::log(float(K)));
    for (Index k = 0; k < K; ++k) {
      const Index r = i * K + k;
      c[r] = -scale * std::exp(logw[r] - most) / total;
      logq_slope[r] = c[r];
    }
  }
  for (Index r = 0; r < R; ++r) {
    float* g = s.grad.data() + r * D;
    const float cr = c[r];
#pragma omp simd
    for (Index d = 0; d < D; ++d) g[d] *= cr;
  }
  // backward through the decoder, to dL/dz (rows R)
  for (Index j = out_at; j >= n + 2; --j) {
    const Index rows = R;
    s.grad2.resize(rows * layers[j].in);
    layer_backward(layers[j], act_of(j), opt, input_of(j), s.acts[j].data(), s.grad.data(), s.grad2.data(), false,
                   rows, s, split);
    std::swap(s.grad, s.grad2);
  }
  // dL/dz -> dL/dmu, dL/dlv (the IWAE's log w also reads z, mu and lv directly)
  std::vector<float> dmu(B * L, 0.f), dlv(B * L, 0.f);
  for (Index r = 0; r < R; ++r) {
    const Index i = r / K;
    for (Index l = 0; l < L; ++l) {
      const float v = lv[i * L + l], zv = s.z[r * L + l];
      float dz = s.grad[r * L + l];
      if (net.objective == kObjectiveIwae) {
        const float inv_sd = std::exp(-0.5f * v), t = (zv - mu[i * L + l]) * inv_sd, cr = logq_slope[r];
        dz += cr * (-zv + t * inv_sd);
        dmu[i * L + l] += cr * -(t * inv_sd);
        dlv[i * L + l] += cr * (0.5f - 0.5f * t * t);
      }
      dmu[i * L + l] += dz;
      dlv[i * L + l] += dz * (eps[r * L + l] * (0.5f * std::exp(0.5f * v)));
    }
  }
  if (net.objective == kObjectiveElbo)
    for (Index t = 0; t < B * L; ++t) {
      dmu[t] += scale * net.kl_weight * mu[t];
      dlv[t] += scale * net.kl_weight * (0.5f * (std::exp(lv[t]) - 1.f));
    }
  // backward through the two heads and the encoder
  float* dh = nullptr;
  s.grad.resize(B * layers[mu_at].in);
  dh = n > 0 ? s.grad.data() : nullptr;
  layer_backward(layers[mu_at], kLinear, opt, input_of(mu_at), mu, dmu.data(), dh, false, B, s, split);
  layer_backward(layers[lv_at], kLinear, opt, input_of(lv_at), lv, dlv.data(), dh, true, B, s, split);
  for (Index j = n - 1; j >= 0; --j) {
    s.grad2.resize(B * layers[j].in);
    layer_backward(layers[j], act_of(j), opt, input_of(j), s.acts[j].data(), s.grad.data(),
                   j > 0 ? s.grad2.data() : nullptr, false, B, s, split);
    std::swap(s.grad, s.grad2);
  }
}

}  // namespace vaelab
