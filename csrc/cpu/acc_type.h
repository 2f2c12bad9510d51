// The type the CPU kernels add and multiply in: float for float16, bfloat16 and float32, double for
// float64 (as ATen's opmath_type, which the stable ABI does not offer).
#pragma once
#include <type_traits>

namespace sgg::cpu {

template <typename T>
using acc_type = std::conditional_t<std::is_same_v<T, double>, double, float>;

}  // namespace sgg::cpu
