// CUDA kernels of one guidance pass. Torch-independent: they see only sgg::GuidanceParams (raw
// pointers, sizes, strides) and a stream; csrc/cuda/guidance_cuda.cu binds them to ATen.
//
// Dense layout: 16-byte loads and stores on each sample's aligned body, scalar head and tail.
// Any other layout: a strided walk over params' coalesced dims. Both use guided_value, the rule the
// CPU kernels use, in float (double for double inputs).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../guidance_params.h"

namespace sgg::cuda {

// Accumulation type and round-to-nearest-even conversions of each storage type.
template <typename T>
struct Storage {
  using acc_t = T;  // float and double compute in their own type
  static __device__ __forceinline__ acc_t load(T v) { return v; }
  static __device__ __forceinline__ T store(acc_t v) { return v; }
};
template <>
struct Storage<__half> {
  using acc_t = float;
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
};
template <>
struct Storage<__nv_bfloat16> {
  using acc_t = float;
  static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

constexpr int kThreads = 256;
constexpr int kVectorBytes = 16;
// Vectors in flight per thread and operand: all loads of an iteration are issued before any store
// (the operands may alias out, so the compiler cannot hoist loads across stores by itself).
constexpr int kUnroll = 2;

// 16 bytes of T. Loads go through uint4 (LDG.E.128). The store is one PTX st.global.v4: nvcc 13.0
// split a plain uint4 store here into four 32-bit stores, and __stwb gives STG.E.128.STRONG.SM.
template <typename T>
struct alignas(kVectorBytes) Vector {
  static constexpr int kSize = kVectorBytes / sizeof(T);
  T v[kSize];

  __device__ __forceinline__ void load(const T* p) {
    const uint4 bits = *reinterpret_cast<const uint4*>(p);
    memcpy(v, &bits, kVectorBytes);
  }
  __device__ __forceinline__ void store(T* p) const {
    uint4 bits;
    memcpy(&bits, v, kVectorBytes);
    asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(bits.x), "r"(bits.y), "r"(bits.z),
                 "r"(bits.w)
                 : "memory");
  }
};

struct Launch {
  int sm_count;
  cudaStream_t stream;
};

// One element; offsets[slot] in elements. Absent operands are never read.
template <typename T, bool kU, bool kW, Step kS>
__device__ __forceinline__ void guide_element(const GuidanceParams& p, const int64_t* offsets,
                                              const Coefs<typename Storage<T>::acc_t>& k) {
  using S = Storage<T>;
  using acc_t = typename S::acc_t;
  auto in = [&](int slot, bool present) {
    return present ? S::load(static_cast<const T*>(p.data[slot])[offsets[slot]]) : acc_t(0);
  };
  static_cast<T*>(p.data[kOut])[offsets[kOut]] = S::store(guided_value<kU, kW, kS, acc_t>(
      in(kX, kS != Step::kNone), in(kCond, true), in(kUncond, kU), in(kWeak, kW), in(kNoise, kS == Step::kNoisy), k));
}

// Dense, sample-major operands. kAligned: their addresses agree modulo 16 bytes (checked by the host
// launcher), so each sample's body runs 16-byte vectors; otherwise (e.g. chunk(2) halves of an odd
// size next to an aligned x) every element is a scalar, still coalesced and with no index division.
// blockIdx.y walks samples, so the coefficients are loaded once per sample and thread.
template <typename T, bool kAligned, bool kU, bool kW, Step kS>
__global__ void __launch_bounds__(kThreads) dense_guidance_kernel(const GuidanceParams p) {
  using S = Storage<T>;
  using acc_t = typename S::acc_t;
  using V = Vector<T>;
  constexpr int kSlots[] = {kX, kCond, kUncond, kWeak, kNoise};
  constexpr bool kPresent[] = {kS != Step::kNone, true, kU, kW, kS == Step::kNoisy};
  const int64_t thread = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t threads = int64_t(gridDim.x) * blockDim.x;
  for (int64_t sample = blockIdx.y; sample < p.batch; sample += gridDim.y) {
    const Coefs<acc_t> k = coefficients<kS, acc_t>(p, sample);
    const int64_t base = sample * p.per_sample;
    const auto address = reinterpret_cast<uintptr_t>(static_cast<T*>(p.data[kOut]) + base);
    const int64_t misaligned = int64_t(address % kVectorBytes) / int64_t(sizeof(T));
    const int64_t to_boundary = misaligned == 0 ? 0 : V::kSize - misaligned;
    const int64_t head = kAligned && to_boundary < p.per_sample ? to_boundary : p.per_sample;
    const int64_t vectors = (p.per_sample - head) / V::kSize;
    const int64_t tail = head + vectors * V::kSize;
    for (int64_t i = thread; i < head + (p.per_sample - tail); i += threads) {
      const int64_t e = base + (i < head ? i : tail + i - head);
      const int64_t offsets[kNumSlots] = {e, e, e, e, e, e};
      guide_element<T, kU, kW, kS>(p, offsets, k);
    }
    const int64_t body = base + head;
    for (int64_t v0 = thread; v0 < vectors; v0 += kUnroll * threads) {
      V in[kUnroll][5];
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        const int64_t e = body + (v0 + r * threads) * V::kSize;
        if (v0 + r * threads >= vectors) break;
#pragma unroll
        for (int o = 0; o < 5; ++o)
          if (kPresent[o]) in[r][o].load(static_cast<const T*>(p.data[kSlots[o]]) + e);
      }
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        const int64_t e = body + (v0 + r * threads) * V::kSize;
        if (v0 + r * threads >= vectors) break;
        V result;
#pragma unroll
        for (int j = 0; j < V::kSize; ++j) {
          auto at = [&](int o) { return kPresent[o] ? S::load(in[r][o].v[j]) : acc_t(0); };
          result.v[j] = S::store(guided_value<kU, kW, kS, acc_t>(at(0), at(1), at(2), at(3), at(4), k));
        }
        result.store(static_cast<T*>(p.data[kOut]) + e);
      }
    }
  }
}

// Any strides: each element's offsets from its index over params' coalesced dims (64-bit).
template <typename T, bool kU, bool kW, Step kS>
__global__ void __launch_bounds__(kThreads) strided_guidance_kernel(const GuidanceParams p) {
  using acc_t = typename Storage<T>::acc_t;
  const int64_t numel = p.batch * p.per_sample;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t offsets[kNumSlots] = {};
    int64_t rest = i;
#pragma unroll
    for (int d = kMaxDims - 1; d >= 0; --d) {
      if (d >= p.ndim) continue;
      const int64_t index = rest % p.sizes[d];
      rest /= p.sizes[d];
#pragma unroll
      for (int s = 0; s < kNumSlots; ++s) offsets[s] += index * p.strides[s][d];
    }
    guide_element<T, kU, kW, kS>(p, offsets, coefficients<kS, acc_t>(p, i / p.per_sample));
  }
}

// Enough resident blocks to fill every SM (2048 threads per SM on sm_80..sm_90); loops cover the rest.
inline int64_t max_blocks(const Launch& l) { return int64_t(l.sm_count) * (2048 / kThreads); }

template <typename T, bool kAligned>
struct DensePass {
  template <bool kU, bool kW, Step kS>
  struct Pass {
    static void run(const GuidanceParams& p, const Launch& l) {
      const int64_t samples = std::min<int64_t>(p.batch, 65535);  // gridDim.y limit
      const int64_t per_block = int64_t(kThreads) * (kAligned ? kUnroll * Vector<T>::kSize : 1);
      const int64_t wanted = (p.per_sample + per_block - 1) / per_block;
      const int64_t blocks = std::max<int64_t>(1, std::min(wanted, max_blocks(l) / samples));
      dense_guidance_kernel<T, kAligned, kU, kW, kS>
          <<<dim3(unsigned(blocks), unsigned(samples)), kThreads, 0, l.stream>>>(p);
    }
  };
};

template <typename T>
struct StridedPass {
  template <bool kU, bool kW, Step kS>
  struct Pass {
    static void run(const GuidanceParams& p, const Launch& l) {
      const int64_t wanted = (p.batch * p.per_sample + kThreads - 1) / kThreads;
      const int64_t blocks = std::max<int64_t>(1, std::min(wanted, max_blocks(l)));
      strided_guidance_kernel<T, kU, kW, kS><<<unsigned(blocks), kThreads, 0, l.stream>>>(p);
    }
  };
};

// True when every present operand has out's address modulo 16 bytes, so one vector loop fits all.
inline bool same_alignment(const GuidanceParams& p) {
  const auto out = reinterpret_cast<uintptr_t>(p.data[kOut]) % kVectorBytes;
  for (int s = 0; s < kNumSlots; ++s)
    if (p.data[s] && reinterpret_cast<uintptr_t>(p.data[s]) % kVectorBytes != out) return false;
  return true;
}

// Launches the pass for params p (numel > 0) on l.stream: no allocation, no synchronisation.
template <typename T>
void launch_guidance(const GuidanceParams& p, const Launch& l) {
  if (p.dense && same_alignment(p)) return dispatch_presence<DensePass<T, true>::template Pass>(p, l);
  if (p.dense) return dispatch_presence<DensePass<T, false>::template Pass>(p, l);
  dispatch_presence<StridedPass<T>::template Pass>(p, l);
}

}  // namespace sgg::cuda
