// The CUDA launcher's declaration, visible to the host-compiled bindings (no CUDA headers here).
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace sgg::cuda {

// out = step[0] * x + step[1] * guide(cond, uncond, weak, weights), or guide(...) when step is absent,
// on the current CUDA stream. out may alias x (in place). Inputs must already be validated by
// csrc/checks.h; no call allocates or synchronises, so it can be captured in a CUDA graph.
void guided_step_cuda(const at::Tensor& out, const std::optional<at::Tensor>& x, const at::Tensor& cond,
                      const std::optional<at::Tensor>& uncond, const std::optional<at::Tensor>& weak,
                      const at::Tensor& weights, const std::optional<at::Tensor>& step);

}  // namespace sgg::cuda
