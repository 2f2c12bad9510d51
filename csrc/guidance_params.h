// Torch-independent description of one guidance pass, shared by the CPU and CUDA kernels.
//
//   guide = cond + w_u * (cond - uncond) + w_w * (cond - weak)      (absent operands drop their term)
//   out   = a * x + b * guide                                         (step ops only)
//
// Every operand has the same logical shape [batch, per_sample...]; weights and step are float32,
// either shared ([2], sample stride 0) or per sample ([B, 2], sample stride 2).
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
enum Slot : int { kOut = 0, kX = 1, kCond = 2, kUncond = 3, kWeak = 4, kNumSlots = 5 };

struct GuidanceParams {
  void* data[kNumSlots];  // nullptr where an operand is absent (x is absent for `guide`)
  const float* weights;
  int64_t weights_stride;  // 0 or 2
  const float* step;       // nullptr for `guide`
  int64_t step_stride;     // 0 or 2
  int64_t batch;
  int64_t per_sample;      // numel / batch
  bool dense;              // all operands share one sample-major, dense layout
  int ndim;                // strided layout below, in elements; used only when !dense
  int64_t sizes[kMaxDims];
  int64_t strides[kNumSlots][kMaxDims];
};

// The per-element rule, written once for scalars and SIMD vectors. Terms are added in the order of
// the reference formula (not folded into one coefficient) so cancellation in (cond - uncond) is
// exact where the operands agree. Plain mul/add, no FMA, so vector body and scalar tail agree bit for bit.
template <bool kUncond, bool kWeak, bool kStep, typename V>
SGG_HOST_DEVICE V guided_value(V x, V c, V u, V w, V w_u, V w_w, V a, V b) {
  V g = c;
  if constexpr (kUncond) g = g + w_u * (c - u);
  if constexpr (kWeak) g = g + w_w * (c - w);
  if constexpr (kStep) return a * x + b * g;
  else return g;
}

// Runs Pass<kUncond, kWeak, kStep>::run(p, args...) for the operands present in p, so each kernel is
// compiled without per-element branches on operand presence (args: e.g. the CUDA launch settings).
template <template <bool, bool, bool> class Pass, typename... Args>
inline void dispatch_presence(const GuidanceParams& p, const Args&... args) {
  const bool u = p.data[kUncond] != nullptr, w = p.data[kWeak] != nullptr, s = p.step != nullptr;
  if (s) {
    if (u && w) Pass<true, true, true>::run(p, args...);
    else if (u) Pass<true, false, true>::run(p, args...);
    else if (w) Pass<false, true, true>::run(p, args...);
    else Pass<false, false, true>::run(p, args...);
  } else {
    if (u && w) Pass<true, true, false>::run(p, args...);
    else if (u) Pass<true, false, false>::run(p, args...);
    else if (w) Pass<false, true, false>::run(p, args...);
    else Pass<false, false, false>::run(p, args...);
  }
}

}  // namespace sgg
