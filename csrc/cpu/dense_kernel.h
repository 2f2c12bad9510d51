// SIMD kernel for the dense, sample-major layout. Included once per CPU capability (see
// kernels_{default,avx2,avx512}.cpp): CPU_CAPABILITY names the inline namespace, so each
// instantiation is a distinct symbol and the best one is chosen at run time.
#pragma once
#include <torch/csrc/stable/ops.h>

#include <algorithm>

#include "../guidance_params.h"
#include "vec_lanes.h"

namespace sgg::cpu {
inline namespace CPU_CAPABILITY {

// ~64K elements per task: large enough to amortise the OpenMP fork, small enough that an
// SD3-1024 latent ([2,16,128,128], 512K elements) still spreads over every core.
constexpr int64_t kGrain = 1 << 16;

// Elements [begin, end) of one task. The operand pointers are this function's locals, not references
// captured by a lambda: the vector stores are memcpy's, which may alias any object, so GCC reloaded
// every captured pointer (two loads each) in every iteration of the vector loop.
template <typename T, bool kU, bool kW, Step kS>
void dense_task(const GuidanceParams& p, int64_t begin, int64_t end) {
  using L = Lanes<T>;
  using acc_t = typename L::acc_t;
  using Vec = typename L::Vec;
  constexpr bool kX_ = kS != Step::kNone, kN = kS == Step::kNoisy;
  T* const out = static_cast<T*>(p.data[kOut]);
  const T* const x = static_cast<const T*>(p.data[kX]);
  const T* const cond = static_cast<const T*>(p.data[kCond]);
  const T* const uncond = static_cast<const T*>(p.data[kUncond]);
  const T* const weak = static_cast<const T*>(p.data[kWeak]);
  const T* const noise = static_cast<const T*>(p.data[kNoise]);
  for (int64_t i = begin; i < end;) {
    // Coefficients are read once per sample (per sample and task, at a task boundary).
    const int64_t s = i / p.per_sample;
    const int64_t stop = std::min(end, (s + 1) * p.per_sample);
    const Coefs<acc_t> k = coefficients<kS, acc_t>(p, s);
    const Coefs<Vec> vk{broadcast<Vec>(k.w_u), broadcast<Vec>(k.w_w), broadcast<Vec>(k.a), broadcast<Vec>(k.b),
                        broadcast<Vec>(k.c)};
    for (; i + L::kWidth <= stop; i += L::kWidth) {
      typename L::Pack xv{}, u{}, wk{}, n{}, r;
      const auto c = L::load(cond + i);
      if constexpr (kX_) xv = L::load(x + i);
      if constexpr (kU) u = L::load(uncond + i);
      if constexpr (kW) wk = L::load(weak + i);
      if constexpr (kN) n = L::load(noise + i);
      for (int j = 0; j < L::kParts; ++j) r[j] = guided_value<kU, kW, kS>(xv[j], c[j], u[j], wk[j], n[j], vk);
      L::store(out + i, r);
    }
    const auto at = [&](const T* ptr, bool present, int64_t e) { return present ? acc_t(ptr[e]) : acc_t(0); };
    for (; i < stop; ++i)
      out[i] = T(guided_value<kU, kW, kS>(at(x, kX_, i), acc_t(cond[i]), at(uncond, kU, i), at(weak, kW, i),
                                          at(noise, kN, i), k));
  }
}

template <typename T, bool kU, bool kW, Step kS>
void dense_pass(const GuidanceParams& p) {
  torch::stable::parallel_for(0, p.batch * p.per_sample, kGrain,
                              [&](int64_t begin, int64_t end) { dense_task<T, kU, kW, kS>(p, begin, end); });
}

template <typename T>
struct Dense {
  template <bool kU, bool kW, Step kS>
  struct Pass {
    static void run(const GuidanceParams& p) { dense_pass<T, kU, kW, kS>(p); }
  };
};

template <typename T>
void dense_kernel(const GuidanceParams& p) {
  dispatch_presence<Dense<T>::template Pass>(p);
}

}  // namespace CPU_CAPABILITY
}  // namespace sgg::cpu

// Explicit instantiations for the four supported dtypes, one line per capability file.
#define SGG_INSTANTIATE_DENSE_KERNELS                                                   \
  template void sgg::cpu::CPU_CAPABILITY::dense_kernel<float>(const sgg::GuidanceParams&);  \
  template void sgg::cpu::CPU_CAPABILITY::dense_kernel<double>(const sgg::GuidanceParams&); \
  template void sgg::cpu::CPU_CAPABILITY::dense_kernel<c10::BFloat16>(const sgg::GuidanceParams&); \
  template void sgg::cpu::CPU_CAPABILITY::dense_kernel<c10::Half>(const sgg::GuidanceParams&);
