// SIMD lanes for one storage type, shared by the per-ISA kernels (dense_kernel.h, w2s_loss_kernel.h).
// Declared in the CPU_CAPABILITY namespace of the file that includes it, so each SIMD build has its own.
#pragma once
#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <array>

namespace sgg::cpu {
inline namespace CPU_CAPABILITY {

// One SIMD step: Vectorized<T>::size() elements of T, held as one or two float/double vectors.
template <typename T>
struct Lanes {
  using acc_t = at::opmath_type<T>;
  using Vec = at::vec::Vectorized<acc_t>;
  static constexpr bool kReduced = !std::is_same_v<T, acc_t>;
  static constexpr int kParts = kReduced ? 2 : 1;
  static constexpr int64_t kWidth = at::vec::Vectorized<T>::size();
  using Pack = std::array<Vec, kParts>;

  static Pack load(const T* p) {
    if constexpr (kReduced) {
      auto [lo, hi] = at::vec::convert_to_float<T>(at::vec::Vectorized<T>::loadu(p));
      return {lo, hi};
    } else {
      return {Vec::loadu(p)};
    }
  }
  static void store(T* p, const Pack& v) {
    if constexpr (kReduced) at::vec::convert_from_float<T>(v[0], v[1]).store(p);
    else v[0].store(p);
  }
};

}  // namespace CPU_CAPABILITY
}  // namespace sgg::cpu
