// The public ops' device kernels, written once and instantiated per device: each checks the call
// (checks.cpp), allocates the output and hands the operands to a launcher of that device. The core
// library registers them for CPU (guidance_ops.cpp, w2s_loss_ops.cpp), the CUDA library for CUDA
// (cuda/cuda_ops.cpp), each also for the op's twin (twins.h). Autograd and the traced (fake) kernels are
// registered from Python.
#pragma once
#include <tuple>
#include <vector>

#include "checks.h"

namespace sgg {

// Run(out, x, cond, uncond, weak, weights, step, noise): out = guided_step(...), or guide(...) without
// x and step; out may be x.
using GuidanceRun = void (*)(const Tensor&, const OptTensor&, const Tensor&, const OptTensor&, const OptTensor&,
                             const Tensor&, const OptTensor&, const OptTensor&);

template <GuidanceRun run>
Tensor guide_kernel(Tensor cond, OptTensor uncond, OptTensor weak, Tensor weights) {
  check_guidance_args("guide", nullptr, cond, uncond, weak, weights, nullptr, std::nullopt, false);
  Tensor out = torch::stable::empty_like(cond);
  run(out, std::nullopt, cond, uncond, weak, weights, std::nullopt, std::nullopt);
  return out;
}

template <GuidanceRun run>
Tensor guided_step_kernel(Tensor x, Tensor cond, OptTensor uncond, OptTensor weak, Tensor weights, Tensor step,
                          OptTensor noise) {
  check_guidance_args("guided_step", &x, cond, uncond, weak, weights, &step, noise, false);
  Tensor out = torch::stable::empty_like(x);
  run(out, x, cond, uncond, weak, weights, step, noise);
  return out;
}

template <GuidanceRun run>
void guided_step__kernel(Tensor x, Tensor cond, OptTensor uncond, OptTensor weak, Tensor weights, Tensor step,
                         OptTensor noise) {
  check_guidance_args("guided_step_", &x, cond, uncond, weak, weights, &step, noise, true);
  run(x, x, cond, uncond, weak, weights, step, noise);
}

inline OptTensor contiguous(const OptTensor& t) {
  return t ? OptTensor(torch::stable::contiguous(*t)) : std::nullopt;
}

// Forward(loss, v, u, weak, mid, coefs) and Backward(grad_v, grad_mid, grad, v, u, weak, mid, coefs) take
// contiguous operands.
using W2SForward = void (*)(Tensor, Tensor, Tensor, OptTensor, OptTensor, Tensor);
using W2SBackward = void (*)(Tensor, OptTensor, Tensor, Tensor, Tensor, OptTensor, OptTensor, Tensor);

template <W2SForward forward>
Tensor w2s_loss_kernel(Tensor v, Tensor u, OptTensor weak, OptTensor mid, Tensor coefs) {
  check_w2s_loss_args("w2s_loss", v, u, weak, mid, coefs, nullptr);
  const std::vector<int64_t> shape{v.size(0)};
  Tensor loss = torch::stable::empty(shape, accumulation_type(v), std::nullopt, v.device());
  forward(loss, torch::stable::contiguous(v), torch::stable::contiguous(u), contiguous(weak), contiguous(mid), coefs);
  return loss;
}

// grad_mid comes back with shape [0] when mid is absent: a schema cannot return an optional tensor.
template <W2SBackward backward>
std::tuple<Tensor, Tensor> w2s_loss_backward_kernel(Tensor grad, Tensor v, Tensor u, OptTensor weak, OptTensor mid,
                                                    Tensor coefs) {
  check_w2s_loss_args("w2s_loss_backward", v, u, weak, mid, coefs, &grad);
  const auto new_grad = [&] { return torch::stable::empty(v.sizes(), v.scalar_type(), std::nullopt, v.device()); };
  const std::vector<int64_t> none{0};
  Tensor grad_v = new_grad();
  Tensor grad_mid = mid ? new_grad() : torch::stable::empty(none, v.scalar_type(), std::nullopt, v.device());
  const Tensor g = torch::stable::contiguous(torch::stable::to(grad, accumulation_type(v)));
  backward(grad_v, mid ? OptTensor(grad_mid) : std::nullopt, g, torch::stable::contiguous(v),
           torch::stable::contiguous(u), contiguous(weak), contiguous(mid), coefs);
  return {grad_v, grad_mid};
}

}  // namespace sgg
