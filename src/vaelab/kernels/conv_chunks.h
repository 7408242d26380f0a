// How a batch is split between threads, and how the threads' weight-gradient partial sums are added
// up: the same code for the FFI handlers (conv_ffi.cc, on XLA's thread pool) and for the sanitized
// kernel test (tests/kernels_sanitized.cc, on std::threads), which is why it needs no XLA header.
#pragma once

#include <algorithm>
#include <functional>
#include <vector>

#include "conv_math.h"

namespace vaelab {

// The batch is cut into at most kMaxChunks runs of whole images, the same cut for any number of
// threads; the weight gradients' partial sums of the chunks are added in chunk order, so a run
// repeats exactly (same seed, same losses) however the threads happen to be scheduled.
constexpr Index kMaxChunks = 32;

struct Chunks {
  Index n, size, count;
  explicit Chunks(Index images)
      : n(images), size(images > 0 ? (images + kMaxChunks - 1) / kMaxChunks : 1), count((images + size - 1) / size) {}
  Index lo(Index k) const { return k * size; }
  Index hi(Index k) const { return std::min(n, (k + 1) * size); }
};

// run(count, fn) calls fn(0) ... fn(count - 1) once each, on any threads in any order, and returns
// when all have returned.
using ChunkRunner = std::function<void(Index count, const std::function<void(Index)>& fn)>;

// Runs body(lo, hi) for every chunk of a batch of n images.
inline void for_chunks(const ChunkRunner& run, Index n, const std::function<void(Index, Index)>& body) {
  const Chunks chunks(n);
  run(chunks.count, [&](Index k) { body(chunks.lo(k), chunks.hi(k)); });
}

// Runs weights(lo, hi, dw, db) per chunk into zeroed partial sums, then adds them up in chunk order
// into dw (kernel_size floats) and db (filters floats).
inline void weight_gradients(const ChunkRunner& run, Index n, Index kernel_size, Index filters, float* dw, float* db,
                             const std::function<void(Index, Index, float*, float*)>& weights) {
  const Chunks chunks(n);
  const Index stride = kernel_size + filters;
  std::vector<float> partial(chunks.count * stride, 0.f);
  run(chunks.count, [&](Index k) {
    float* part = partial.data() + k * stride;
    weights(chunks.lo(k), chunks.hi(k), part, part + kernel_size);
  });
  std::fill(dw, dw + kernel_size, 0.f);
  std::fill(db, db + filters, 0.f);
  for (Index k = 0; k < chunks.count; ++k) {
    const float* part = partial.data() + k * stride;
    for (Index i = 0; i < kernel_size; ++i) dw[i] += part[i];
    for (Index f = 0; f < filters; ++f) db[f] += part[kernel_size + f];
  }
}

}  // namespace vaelab
