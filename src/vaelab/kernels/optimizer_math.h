// The optimizers' element-wise updates, one pass over a variable and its slots, as Keras 3 writes them
// (keras/src/optimizers/adam.py, rmsprop.py), operation for operation in float32:
//   adam     m += (g - m) (1 - beta_1);  v += (g^2 - v) (1 - beta_2);  p -= (m alpha) / (sqrt(v) + eps)
//            alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t), computed by the caller as Keras does
//   rmsprop  s = rho s + (1 - rho) g^2;  p -= (lr g) / sqrt(s + eps)
// XLA computes each variable's update as a few separate loops over memory; here it is one loop whose
// vector lanes compute the square roots and divisions eight at a time.
#pragma once

#include <cmath>
#include <type_traits>

#include "dense_math.h"

namespace vaelab {

// The scalars of an update, in the order the handlers receive them (one float32 array).
struct AdamScalars {
  float alpha, one_minus_beta_1, one_minus_beta_2, epsilon;
};
struct RmspropScalars {
  float lr, rho, one_minus_rho, epsilon;
};

// sqrt of each lane (compilers keep libm's sqrtf, which may set errno, out of vector loops).
inline Lanes lane_sqrt(Lanes v) {
#if defined(__AVX__)
  return (Lanes)_mm256_sqrt_ps((__m256)v);
#else
  for (int k = 0; k < kLanes; ++k) v[k] = std::sqrt(v[k]);
  return v;
#endif
}

// One update of elements [lo, hi): T is float (the scalar tail) or Lanes (eight elements); the same
// operations in the same order either way.
template <class T>
inline void adam_element(T& p, T& m, T& v, T g, AdamScalars s) {
  m = m + (g - m) * s.one_minus_beta_1;
  v = v + (g * g - v) * s.one_minus_beta_2;
  if constexpr (std::is_same_v<T, float>)
    p = p - (m * s.alpha) / (std::sqrt(v) + s.epsilon);
  else
    p = p - (m * s.alpha) / (lane_sqrt(v) + s.epsilon);
}

template <class T>
inline void rmsprop_element(T& p, T& velocity, T g, RmspropScalars s) {
  velocity = s.rho * velocity + s.one_minus_rho * (g * g);
  if constexpr (std::is_same_v<T, float>)
    p = p - (s.lr * g) / std::sqrt(velocity + s.epsilon);
  else
    p = p - (s.lr * g) / lane_sqrt(velocity + s.epsilon);
}

// Elements [lo, hi) of a variable p and its slots m, v with gradient g, written to the outputs (which
// may be the inputs themselves: every element is read before it is written).
inline void adam_update(const float* p, const float* m, const float* v, const float* g, float* p_out, float* m_out,
                        float* v_out, AdamScalars s, Index lo, Index hi) {
  Index i = lo;
  for (; i + kLanes <= hi; i += kLanes) {
    Lanes pv = load(p + i), mv = load(m + i), vv = load(v + i);
    adam_element(pv, mv, vv, load(g + i), s);
    store(p_out + i, pv);
    store(m_out + i, mv);
    store(v_out + i, vv);
  }
  for (; i < hi; ++i) {
    float pv = p[i], mv = m[i], vv = v[i];
    adam_element(pv, mv, vv, g[i], s);
    p_out[i] = pv;
    m_out[i] = mv;
    v_out[i] = vv;
  }
}

inline void rmsprop_update(const float* p, const float* velocity, const float* g, float* p_out, float* velocity_out,
                           RmspropScalars s, Index lo, Index hi) {
  Index i = lo;
  for (; i + kLanes <= hi; i += kLanes) {
    Lanes pv = load(p + i), sv = load(velocity + i);
    rmsprop_element(pv, sv, load(g + i), s);
    store(p_out + i, pv);
    store(velocity_out + i, sv);
  }
  for (; i < hi; ++i) {
    float pv = p[i], sv = velocity[i];
    rmsprop_element(pv, sv, g[i], s);
    p_out[i] = pv;
    velocity_out[i] = sv;
  }
}

}  // namespace vaelab
