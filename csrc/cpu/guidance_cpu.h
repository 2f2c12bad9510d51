#pragma once
#include "../stable_tensor.h"

namespace sgg::cpu {

// SIMD level of the dense kernel, in increasing order.
enum class Capability : int { kDefault = 0, kAVX2 = 1, kAVX512 = 2 };
Capability capability();
void set_capability(Capability c);  // for tests and benchmarks; refuses what the CPU lacks

// out = step[0] * x + step[1] * guide(cond, uncond, weak, weights) (+ step[2] * noise where noise is
// given), or guide(...) when step is absent. out may alias x (in place). Inputs must already be
// validated (csrc/checks.h).
void guided_step_cpu(const Tensor& out, const OptTensor& x, const Tensor& cond, const OptTensor& uncond,
                     const OptTensor& weak, const Tensor& weights, const OptTensor& step, const OptTensor& noise);

// Runs body.template operator()<T>() for the element type of `dtype` (the four the ops take).
template <typename Body>
void dispatch_float(ScalarType dtype, const char* op, const Body& body) {
  switch (dtype) {
    case ScalarType::Float: return body.template operator()<float>();
    case ScalarType::Double: return body.template operator()<double>();
    case ScalarType::Half: return body.template operator()<c10::Half>();
    case ScalarType::BFloat16: return body.template operator()<c10::BFloat16>();
    default: fail("sgg: ", op, " does not support dtype ", dtype_name(dtype));
  }
}

}  // namespace sgg::cpu
