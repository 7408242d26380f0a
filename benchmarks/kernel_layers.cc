// The ConvNet's conv layers as the compiled kernels compute them, on one thread, without XLA:
// forward, weight gradients and input gradients of each layer for a batch of 100, in milliseconds
// of the thread's CPU time (best of 25 rounds, so that other work on the machine counts little).
// Built and run by kernel_layers.py; by hand:
//
//   c++ -std=c++17 -O3 -march=native -fopenmp-simd -Isrc/vaelab/kernels benchmarks/kernel_layers.cc -o kl && ./kl
#include <time.h>

#include <cstdio>
#include <random>

#include "conv_layers.h"
#include "conv_pool.h"

using namespace vaelab;

namespace {

constexpr int kBatch = 100;

double cpu_ms() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

template <class Fn>
double best_ms(Fn fn) {
  fn();
  double best = 1e9;
  for (int round = 0; round < 25; ++round) {
    const double start = cpu_ms();
    for (int i = 0; i < 4; ++i) fn();
    best = std::min(best, (cpu_ms() - start) / 4);
  }
  return best;
}

// Non-negative values with about half zeros, like the relu outputs and gradients the layers see.
std::vector<float> data(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = std::max(0.f, normal(gen));
  return v;
}

double total = 0;

void row(const char* layer, double forward, double weights, double input) {
  const double sum = forward + weights + input;
  total += sum;
  if (input > 0)
    std::printf("| %s | %.3f | %.3f | %.3f | %.3f |\n", layer, forward, weights, input, sum);
  else
    std::printf("| %s | %.3f | %.3f | (not needed) | %.3f |\n", layer, forward, weights, sum);
}

template <int C, int F>
void conv_pool(const char* layer, int h, int w, bool input) {
  auto x = data(size_t(kBatch) * h * w * C, 1), k = data(9 * C * F, 2), b = data(F, 3);
  auto g = data(size_t(kBatch) * (h / 2) * (w / 2) * F, 4);
  std::vector<float> y(g.size()), dk(k.size()), db(F), dx(x.size());
  std::vector<int8_t> arg(g.size());
  using L = ConvPool<C, F>;
  row(layer, best_ms([&] { L::forward(x.data(), k.data(), b.data(), kRelu, h, w, y.data(), arg.data(), 0, kBatch); }),
      best_ms([&] {
        L::weights(x.data(), y.data(), arg.data(), g.data(), kRelu, h, w, dk.data(), db.data(), 0, kBatch);
      }),
      input ? best_ms([&] { L::input(k.data(), y.data(), arg.data(), g.data(), kRelu, h, w, dx.data(), 0, kBatch); })
            : 0);
}

template <int C, int F>
void conv(const char* layer, int h, int w) {
  auto x = data(size_t(kBatch) * h * w * C, 1), k = data(9 * C * F, 2), b = data(F, 3);
  auto g = data(size_t(kBatch) * h * w * F, 4);
  std::vector<float> y(g.size()), dk(k.size()), db(F), dx(x.size());
  using L = Conv<C, F>;
  row(layer, best_ms([&] { L::forward(x.data(), k.data(), b.data(), kRelu, h, w, y.data(), 0, kBatch); }),
      best_ms([&] { L::weights(x.data(), y.data(), g.data(), kRelu, h, w, dk.data(), db.data(), 0, kBatch); }),
      best_ms([&] { L::input(k.data(), y.data(), g.data(), kRelu, h, w, dx.data(), 0, kBatch); }));
}

template <int C, int F>
void upconv(const char* layer, int h, int w, int pad, int32_t act) {
  const UpGeometry geo{h, w, pad};
  auto x = data(size_t(kBatch) * h * w * C, 1), k = data(9 * C * F, 2), b = data(F, 3);
  auto g = data(size_t(kBatch) * geo.out_h() * geo.out_w() * F, 4);
  std::vector<float> y(g.size()), dkc(16 * C * F), db(F), dx(x.size());
  const std::vector<float> kc = subpixel_kernels<C, F>(k.data(), geo);
  using L = UpConv<C, F>;
  row(layer, best_ms([&] { L::forward(x.data(), kc.data(), b.data(), act, geo, y.data(), 0, kBatch); }),
      best_ms([&] { L::weights(x.data(), y.data(), g.data(), act, geo, dkc.data(), db.data(), 0, kBatch); }),
      best_ms([&] { L::input(kc.data(), y.data(), g.data(), act, geo, dx.data(), 0, kBatch); }));
}

}  // namespace

int main() {
  std::printf("| layer (batch %d, one thread) | forward ms | weight gradients ms | input gradient ms | all ms |\n",
              kBatch);
  std::printf("|---|---:|---:|---:|---:|\n");
  conv_pool<1, 16>("encoder_conv1: conv 1->16 + pool, 28x28", 28, 28, false);
  conv_pool<16, 8>("encoder_conv2: conv 16->8 + pool, 14x14", 14, 14, true);
  conv<8, 8>("decoder_conv1: conv 8->8, 8x8", 8, 8);
  upconv<8, 16>("decoder_conv2: upsample + conv 8->16 valid, 8x8 -> 14x14", 8, 8, 0, kRelu);
  upconv<16, 1>("decoder_mean: upsample + conv 16->1 + sigmoid, 14x14 -> 28x28", 14, 14, 1, kSigmoid);
  std::printf("| the conv stack, forward and backward | | | | **%.3f** |\n", total);
}
