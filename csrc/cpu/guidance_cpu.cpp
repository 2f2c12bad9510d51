// CPU launcher: picks the SIMD build for this processor for dense operands, and walks arbitrary
// strides otherwise. Registered with the dispatcher in csrc/guidance_ops.cpp.
#include <atomic>

#include "../params_from_tensors.h"
#include "acc_type.h"
#include "guidance_cpu.h"

#define SGG_DECLARE_DENSE(CAP)                                             \
  namespace sgg::cpu::CAP {                                                \
  template <typename T>                                                    \
  void dense_kernel(const GuidanceParams& p);                              \
  }
SGG_DECLARE_DENSE(DEFAULT)
SGG_DECLARE_DENSE(AVX2)
SGG_DECLARE_DENSE(AVX512)

namespace sgg::cpu {
namespace {

std::atomic<int> g_capability{-1};  // -1: not chosen yet

Capability detect_capability() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return Capability::kAVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Capability::kAVX2;
#endif
  return Capability::kDefault;
}

// Scalar walk over up to kMaxDims coalesced dims, with an odometer per task instead of a division
// per element. Same per-element rule as the dense kernel, so results match it bit for bit.
template <typename T, bool kU, bool kW, Step kS>
struct StridedPass {
  static void run(const GuidanceParams& p) {
    using acc_t = acc_type<T>;
    constexpr bool kX_ = kS != Step::kNone, kN = kS == Step::kNoisy;
    torch::stable::parallel_for(0, p.batch * p.per_sample, 1 << 14, [&](int64_t begin, int64_t end) {
      int64_t idx[kMaxDims] = {}, off[kNumSlots] = {};
      for (int64_t d = p.ndim - 1, rem = begin; d >= 0; --d) {
        idx[d] = rem % p.sizes[d];
        rem /= p.sizes[d];
        for (int s = 0; s < kNumSlots; ++s) off[s] += idx[d] * p.strides[s][d];
      }
      auto load = [&](int s, bool present) {
        return present ? acc_t(static_cast<const T*>(p.data[s])[off[s]]) : acc_t(0);
      };
      Coefs<acc_t> k{};
      for (int64_t i = begin, next = 0; i < end; ++i) {
        if (i >= next) {
          const int64_t sample = i / p.per_sample;
          next = (sample + 1) * p.per_sample;
          k = coefficients<kS, acc_t>(p, sample);
        }
        static_cast<T*>(p.data[kOut])[off[kOut]] = T(guided_value<kU, kW, kS>(
            load(kX, kX_), load(kCond, true), load(kUncond, kU), load(kWeak, kW), load(kNoise, kN), k));
        for (int64_t d = p.ndim - 1; d >= 0; --d) {
          for (int s = 0; s < kNumSlots; ++s) off[s] += p.strides[s][d];
          if (++idx[d] < p.sizes[d]) break;
          for (int s = 0; s < kNumSlots; ++s) off[s] -= p.sizes[d] * p.strides[s][d];
          idx[d] = 0;
        }
      }
    });
  }
};

template <typename T>
struct Strided {
  template <bool kU, bool kW, Step kS>
  using Pass = StridedPass<T, kU, kW, kS>;
};

template <typename T>
void run_dense(const GuidanceParams& p) {
  switch (capability()) {
    case Capability::kAVX512: return AVX512::dense_kernel<T>(p);
    case Capability::kAVX2: return AVX2::dense_kernel<T>(p);
    default: return DEFAULT::dense_kernel<T>(p);
  }
}

}  // namespace

Capability capability() {
  int c = g_capability.load(std::memory_order_relaxed);
  if (c < 0) {
    c = static_cast<int>(detect_capability());
    g_capability.store(c, std::memory_order_relaxed);
  }
  return static_cast<Capability>(c);
}

void set_capability(Capability c) {
  SGG_CHECK(c <= detect_capability(), "sgg: this processor does not support the requested SIMD level");
  g_capability.store(static_cast<int>(c), std::memory_order_relaxed);
}

void guided_step_cpu(const Tensor& out, const OptTensor& x, const Tensor& cond, const OptTensor& uncond,
                     const OptTensor& weak, const Tensor& weights, const OptTensor& step, const OptTensor& noise) {
  SGG_CHECK(cond.is_cpu(), "sgg: the cpu kernel needs CPU tensors, got cond on ", device_of(cond));
  with_params(out, x, cond, uncond, weak, weights, step, noise, [&](const GuidanceParams& p) {
    if (p.batch * p.per_sample == 0) return;
    dispatch_float(cond.scalar_type(), "guided_step", [&]<typename T>() {
      if (p.dense) run_dense<T>(p);
      else dispatch_presence<Strided<T>::template Pass>(p);
    });
  });
}

}  // namespace sgg::cpu
