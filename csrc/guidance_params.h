// Torch-independent description of one guidance pass, shared by the CPU and CUDA kernels.
//
//   guide = cond + w_u * (cond - uncond) + w_w * (cond - weak)      (absent operands drop their term)
//   out   = a * x + b * guide (+ c * noise)                           (step ops only; noise: a stochastic step)
//
// Every operand has the same logical shape [batch, per_sample...]; weights and step are float32,
// either shared ([2] or [3], sample stride 0) or per sample ([B, 2] or [B, 3], sample stride 2 or 3).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define SGG_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SGG_HOST_DEVICE inline
#endif

namespace sgg {

// Up to this many dimensions after coalescing; the contiguous fast path has no limit.
constexpr int kMaxDims = 8;
// Operand slots, in the order of the strides table.
enum Slot : int { kOut = 0, kX = 1, kCond = 2, kUncond = 3, kWeak = 4, kNoise = 5, kNumSlots = 6 };

struct GuidanceParams {
  void* data[kNumSlots];  // nullptr where an operand is absent (x is absent for `guide`)
  const float* weights;
  int64_t weights_stride;  // 0 or 2
  const float* step;       // nullptr for `guide`; (a, b) or, with noise, (a, b, c) per sample
  int64_t step_stride;     // 0, or 2 (3 with noise)
  int64_t batch;
  int64_t per_sample;      // numel / batch
  bool dense;              // all operands share one sample-major, dense layout
  int ndim;                // strided layout below, in elements; used only when !dense
  int64_t sizes[kMaxDims];
  int64_t strides[kNumSlots][kMaxDims];
};

// What a pass computes: guide only, a step, or a step with noise.
enum class Step : int { kNone = 0, kPlain = 1, kNoisy = 2 };

// One sample's coefficients in the accumulation type (a, b, c unused where the pass has no step or noise).
template <typename V>
struct Coefs {
  V w_u, w_w, a, b, c;
};

// The per-element rule, written once for scalars and SIMD vectors. Terms are added in the order of
// the reference formula (not folded into one coefficient) so cancellation in (cond - uncond) is
// exact where the operands agree. Plain mul/add, no FMA, so vector body and scalar tail agree bit for bit.
template <bool kUncond, bool kWeak, Step kStep, typename V>
SGG_HOST_DEVICE V guided_value(V x, V c, V u, V w, V n, const Coefs<V>& k) {
  V g = c;
  if constexpr (kUncond) g = g + k.w_u * (c - u);
  if constexpr (kWeak) g = g + k.w_w * (c - w);
  if constexpr (kStep == Step::kNone) return g;
  else if constexpr (kStep == Step::kPlain) return k.a * x + k.b * g;
  else return (k.a * x + k.b * g) + k.c * n;
}

// Sample s's coefficients from p, as scalars of type A.
template <Step kStep, typename A>
SGG_HOST_DEVICE Coefs<A> coefficients(const GuidanceParams& p, int64_t s) {
  const float* w = p.weights + s * p.weights_stride;
  const float* st = kStep != Step::kNone ? p.step + s * p.step_stride : nullptr;
  return {A(w[0]), A(w[1]), st ? A(st[0]) : A(0), st ? A(st[1]) : A(0), kStep == Step::kNoisy ? A(st[2]) : A(0)};
}

// Runs Pass<kUncond, kWeak, kStep>::run(p, args...) for the operands present in p, so each kernel is
// compiled without per-element branches on operand presence (args: e.g. the CUDA launch settings).
template <template <bool, bool, Step> class Pass, Step kStep, typename... Args>
inline void dispatch_uncond_weak(const GuidanceParams& p, const Args&... args) {
  const bool u = p.data[kUncond] != nullptr, w = p.data[kWeak] != nullptr;
  if (u && w) Pass<true, true, kStep>::run(p, args...);
  else if (u) Pass<true, false, kStep>::run(p, args...);
  else if (w) Pass<false, true, kStep>::run(p, args...);
  else Pass<false, false, kStep>::run(p, args...);
}

template <template <bool, bool, Step> class Pass, typename... Args>
inline void dispatch_presence(const GuidanceParams& p, const Args&... args) {
  if (p.data[kNoise]) dispatch_uncond_weak<Pass, Step::kNoisy>(p, args...);
  else if (p.step) dispatch_uncond_weak<Pass, Step::kPlain>(p, args...);
  else dispatch_uncond_weak<Pass, Step::kNone>(p, args...);
}

}  // namespace sgg
