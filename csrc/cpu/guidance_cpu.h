#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace sgg::cpu {

// SIMD level of the dense kernel, in increasing order.
enum class Capability : int { kDefault = 0, kAVX2 = 1, kAVX512 = 2 };
Capability capability();
void set_capability(Capability c);  // for tests and benchmarks; refuses what the CPU lacks

// out = step[0] * x + step[1] * guide(cond, uncond, weak, weights), or guide(...) when step is absent.
// out may alias x (in place). Inputs must already be validated (csrc/checks.h).
void guided_step_cpu(const at::Tensor& out, const std::optional<at::Tensor>& x, const at::Tensor& cond,
                     const std::optional<at::Tensor>& uncond, const std::optional<at::Tensor>& weak,
                     const at::Tensor& weights, const std::optional<at::Tensor>& step);

}  // namespace sgg::cpu
