// The dense kernels' three passes for Burda et al.'s network (784-200-200-50, tanh), on one thread, without
// XLA: milliseconds of the thread's CPU time per pass (best of 30 rounds of 20) and GFLOP/s, and the step's total.
// Compare with NumPy's products for the same shapes in the same minute (one thread: OPENBLAS_NUM_THREADS=1).
//
//   c++ -std=c++17 -O3 -march=native -fopenmp-simd -Isrc/vaelab/kernels benchmarks/dense_layers.cc -o dl && ./dl 20
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <random>

#include "dense_math.h"

using namespace vaelab;

namespace {

double cpu_ms() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

template <class Fn>
double best_ms(Fn fn) {
  fn();
  double best = 1e9;
  for (int round = 0; round < 30; ++round) {
    const double start = cpu_ms();
    for (int i = 0; i < 20; ++i) fn();
    best = std::min(best, (cpu_ms() - start) / 20);
  }
  return best;
}

std::vector<float> data(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = u(gen);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  const Index m = argc > 1 ? std::atoi(argv[1]) : 20;  // the batch
  const Index layers[][2] = {{784, 200}, {200, 200}, {200, 50}, {200, 50}, {50, 200}, {200, 200}, {200, 784}};
  double forward = 0, weights = 0, input = 0, flops = 0;
  for (int l = 0; l < 7; ++l) {
    const Index k = layers[l][0], n = layers[l][1];
    auto x = data(m * k, 1), w = data(k * n, 2), b = data(n, 3), y = data(m * n, 4), g = data(m * n, 5),
         dw = data(k * n, 6), db = data(n, 7), dx = data(m * k, 8), d = data(m * n, 9);
    const double f = best_ms([&] {
      dense_forward<DenseAct<kTanh>>(x.data(), w.data(), b.data(), y.data(), m, k, n, 0, DenseWork::strips(n));
    });
    const double wg = best_ms([&] {
      pre_activation_gradient<DenseAct<kTanh>>(y.data(), g.data(), d.data(), m * n);
      dense_weights(x.data(), d.data(), dw.data(), db.data(), m, k, n, 0, DenseWork::strips(n));
    });
    const double in = best_ms([&] {
      pre_activation_gradient<DenseAct<kTanh>>(y.data(), g.data(), d.data(), m * n);
      dense_input(d.data(), w.data(), dx.data(), m, k, n, 0, DenseWork::dot_groups(k));
    });
    const double product = 2.0 * m * k * n;
    std::printf("%4ldx%4ld  forward %.4f ms (%.0f GFLOP/s)  weights %.4f (%.0f)  input %.4f (%.0f)\n", long(k),
                long(n), f, product / f / 1e6, wg, product / wg / 1e6, in, product / in / 1e6);
    forward += f;
    weights += wg;
    if (l > 0) input += in;  // the images' gradient is never computed
    flops += product * (l > 0 ? 3 : 2);
  }
  const double total = forward + weights + input;
  std::printf("batch %ld: %.3f ms per step (forward %.3f, weights %.3f, input %.3f), %.0f GFLOP/s; %.2f s per "
              "60,000 images\n",
              long(m), total, forward, weights, input, flops / total / 1e6, total * 60000 / m / 1e3);
  return 0;
}
