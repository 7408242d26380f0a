// A dense VAE's whole training step (vae_step.h) alone, without XLA or Keras, on one thread: the thread's CPU time
// per step (best of 5 rounds of 200), Burda et al.'s network (784-200-200-50, tanh), Adam or RMSprop.
// The floor of vaelab.fused_step: what its FFI call costs; the random draws, Keras' step and the dispatch come on top.
//
//   c++ -std=c++17 -O3 -march=native -fopenmp-simd -Isrc/vaelab/kernels benchmarks/vae_step.cc -o vs
//   ./vs BATCH K OPTIMIZER      (K 1: the ELBO, K > 1: the IWAE bound; OPTIMIZER 0 Adam, 1 RMSprop)
#include <ctime>
static double now(){timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t); return t.tv_sec+1e-9*t.tv_nsec;}
#include <cstdio>
#include <random>
#include "vae_step.h"
using namespace vaelab;
int main(int argc, char** argv) {
  Index B = argc > 1 ? atoi(argv[1]) : 20, K = argc > 2 ? atoi(argv[2]) : 1;
  int opt_kind = argc > 3 ? atoi(argv[3]) : 0;
  std::vector<Index> ins = {784, 200, 200, 200, 50, 200, 200}, outs = {200, 200, 50, 50, 200, 200, 784};
  std::mt19937 g(0); std::normal_distribution<float> nd(0, 0.05f);
  std::vector<std::vector<float>> store;
  std::vector<StepLayer> layers(7);
  for (int j = 0; j < 7; ++j) {
    Index n = ins[j] * outs[j];
    auto mk = [&](Index c, bool rnd) { store.emplace_back(c); for (auto& v : store.back()) v = rnd ? nd(g) : 0.f; return store.back().data(); };
    layers[j] = StepLayer{mk(n, true), mk(outs[j], false), {mk(n, false), mk(n, false)}, {mk(outs[j], false), mk(outs[j], false)}, ins[j], outs[j]};
  }
  std::vector<float> x(B * 784), eps(B * K * 50), rec(B), kl(B), obj(B);
  for (auto& v : x) v = (g() % 3 == 0); std::normal_distribution<float> n1(0, 1); for (auto& v : eps) v = n1(g);
  StepOptimizer opt{opt_kind, {1e-3f, 0.1f, 0.001f, 1e-7f}};
  StepNetwork net{B, K, 2, kTanh, K > 1 ? kObjectiveIwae : kObjectiveElbo, 1.f};
  StepScratch s;
  for (int t = 0; t < 50; ++t) vae_step(net, layers.data(), opt, x.data(), eps.data(), rec.data(), kl.data(), obj.data(), s);
  double best = 1e9;
  for (int r = 0; r < 5; ++r) {
    double t0 = now();
    for (int t = 0; t < 200; ++t) vae_step(net, layers.data(), opt, x.data(), eps.data(), rec.data(), kl.data(), obj.data(), s);
    best = std::min(best, (now() - t0) / 200);
  }
  printf("batch %ld, K %ld: %.3f ms of CPU per step, %.2f s per 60,000 images (objective %.3f)\n", (long)B, (long)K, best * 1e3, best * 60000 / B, obj[0]);
}
