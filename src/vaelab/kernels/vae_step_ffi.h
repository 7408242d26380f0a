// The XLA FFI handler of vae_step.h: a dense VAE's or IWAE's whole training step in one call. Included once, at the
// end of conv_ffi.cc (one translation unit), after dense_ffi.h, whose helpers it uses.
//
// Arguments: x (B, D) the images the likelihood scores (binarised already, where the run binarises), eps (B K, L),
// scalars (5: the KL weight, then the optimizer's four, optimizer_math.h), then the parameters in the network's
// order (vae_step.h: kernel, bias of each layer), then the optimizer's slots (Adam: every parameter's m, then every
// v; RMSprop: every velocity). Results: reconstruction, kl, objective (B each), then the parameters and slots
// after the step, in the arguments' order; ops.py aliases each to its argument so that XLA updates them in place
// (where it cannot, the handler copies the argument first and works on the copy).
#pragma once

#include "vae_step.h"

namespace vaelab {
namespace {

ffi::Error VaeStep(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets, int32_t act, int32_t hidden, int32_t samples,
                   int32_t objective, int32_t optimizer) {
  if (!valid_dense_activation(act) || hidden < 0 || samples < 1 || (objective != kObjectiveElbo &&
      objective != kObjectiveIwae) || (optimizer != kAdam && optimizer != kRmsprop) ||
      (objective == kObjectiveElbo && samples != 1))
    return invalid("vae step: bad attributes");
  const Index layer_count = 2 * Index(hidden) + 3, params = 2 * layer_count;
  const Index slots = (optimizer == kAdam ? 2 : 1) * params;
  if (Index(args.size()) != 3 + params + slots || Index(rets.size()) != 3 + params + slots)
    return invalid("vae step: wrong number of buffers for the network and optimizer");
  std::vector<ffi::AnyBuffer> in, out;
  for (size_t t = 0; t < args.size(); ++t) {
    auto a = args.get<ffi::AnyBuffer>(t);
    if (!a || a->element_type() != ffi::F32) return invalid("vae step: every argument must be float32");
    in.push_back(*a);
  }
  for (size_t t = 0; t < rets.size(); ++t) {
    auto r = rets.get<ffi::AnyBuffer>(t);
    if (!r || (*r)->element_type() != ffi::F32) return invalid("vae step: every result must be float32");
    out.push_back(**r);
  }
  auto dims = [](const ffi::AnyBuffer& b) { return b.dimensions(); };
  auto x = dims(in[0]), eps = dims(in[1]);
  if (x.size() != 2 || eps.size() != 2 || in[2].element_count() != 5) return invalid("vae step: bad x, eps or scalars");
  const Index B = x[0], D = x[1];
  std::vector<StepLayer> layers(layer_count);
  for (Index j = 0; j < layer_count; ++j) {
    const ffi::AnyBuffer &w = in[3 + 2 * j], &b = in[4 + 2 * j];
    if (dims(w).size() != 2 || dims(b).size() != 1 || dims(b)[0] != dims(w)[1] || dims(w)[0] < 1 || dims(w)[1] < 1)
      return invalid("vae step: every layer needs a kernel (in, out) and a bias (out)");
    layers[j].in = dims(w)[0];
    layers[j].out = dims(w)[1];
  }
  // the chain: encoder x -> h_n; both heads from h_n; z (L) -> decoder -> D
  const Index n = hidden, L = layers[n].out;
  for (Index j = 0; j < layer_count; ++j) {
    const Index want_in = j == 0 ? D : j == n + 1 ? layers[n].in : j == n + 2 ? L : layers[j - 1].out;
    if (layers[j].in != want_in) return invalid("vae step: the layers' widths do not chain");
  }
  if (layers[n + 1].out != L || layers[2 * n + 2].out != D || eps[0] != B * samples || eps[1] != L || B < 1)
    return invalid("vae step: the heads, the output or eps do not fit the images");
  for (Index t = 0; t < 3; ++t)
    if (out[t].element_count() != size_t(B)) return invalid("vae step: the per-image results must have B elements");
  for (Index t = 3; t < Index(in.size()); ++t) {
    const Index p = (t - 3) % params;  // the parameter a slot belongs to
    if (in[t].element_count() != in[3 + p].element_count() || out[t].element_count() != in[t].element_count())
      return invalid("vae step: a slot or a result does not have its parameter's size");
  }
  // work on the results: the arguments' values copied in where XLA did not alias them
  for (Index t = 3; t < Index(in.size()); ++t)
    if (out[t].untyped_data() != in[t].untyped_data())
      std::memcpy(out[t].untyped_data(), in[t].untyped_data(), in[t].size_bytes());
  auto at = [&](Index t) { return static_cast<float*>(out[t].untyped_data()); };
  for (Index j = 0; j < layer_count; ++j) {
    StepLayer& l = layers[j];
    l.w = at(3 + 2 * j);
    l.b = at(4 + 2 * j);
    for (Index k = 0; k < 2; ++k) {
      const bool used = k == 0 || optimizer == kAdam;
      l.w_slot[k] = used ? at(3 + (k + 1) * params + 2 * j) : nullptr;
      l.b_slot[k] = used ? at(4 + (k + 1) * params + 2 * j) : nullptr;
    }
  }
  const float* scalars = static_cast<const float*>(in[2].untyped_data());
  StepOptimizer opt{optimizer, {scalars[1], scalars[2], scalars[3], scalars[4]}};
  StepNetwork net{B, samples, n, act, objective, scalars[0]};
  thread_local StepScratch scratch;
  const Splitter on_pool = [&pool](Index units, double flops, const std::function<void(Index, Index)>& work) {
    split(pool, units, flops, work);  // dense_ffi.h's: large passes only, pieces on XLA's pool and this thread
  };
  vae_step(net, layers.data(), opt, static_cast<const float*>(in[0].untyped_data()),
           static_cast<const float*>(in[1].untyped_data()), at(0), at(1), at(2), scratch, on_pool);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace vaelab

// vae_step: (x, eps, scalars, parameters..., slots...) -> (reconstruction, kl, objective, parameters..., slots...)
XLA_FFI_DEFINE_HANDLER_SYMBOL(vaelab_vae_step, vaelab::VaeStep,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int32_t>("activation")
                                  .Attr<int32_t>("hidden")
                                  .Attr<int32_t>("samples")
                                  .Attr<int32_t>("objective")
                                  .Attr<int32_t>("optimizer"));
