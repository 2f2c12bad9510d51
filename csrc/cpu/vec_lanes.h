// The project's own SIMD layer for the per-ISA kernels (dense_kernel.h, w2s_loss_kernel.h): ATen's
// at::vec is not available under LibTorch's stable ABI, so the kernels use GCC/Clang vector types.
//
// One vector is 64 bytes of the accumulation type (16 floats or 8 doubles) in every build; the compiler
// lowers it to one AVX-512 register, two AVX2 registers or four SSE2 registers, depending on the -m
// flags of the including file (kernels_{default,avx2,avx512}.cpp). Because the logical width is the same
// everywhere and the arithmetic is plain IEEE mul/add (-ffp-contract=off), every build computes the same
// bits, including the lane order of the w2s_loss partial sums. Only the 16-bit conversions pick
// instructions by ISA (half <-> float: F16C / AVX-512; float -> bfloat16: AVX2), and they round to
// nearest-even like c10::Half and c10::BFloat16, as the scalar tail does. Where GCC's lowering of the
// 64-byte type was slow, the code names register-wide pieces (RegisterPieces); docs/design.md says where.
#pragma once
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "acc_type.h"

#if defined(__F16C__) || defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace sgg::cpu {

inline namespace CPU_CAPABILITY {

typedef float F32x16 __attribute__((vector_size(64)));
typedef double F64x8 __attribute__((vector_size(64)));
typedef uint32_t U32x16 __attribute__((vector_size(64)));
typedef int32_t I32x16 __attribute__((vector_size(64)));
typedef uint16_t U16x16 __attribute__((vector_size(32)));

template <typename A>
using vec_type = std::conditional_t<std::is_same_v<A, double>, F64x8, F32x16>;

template <typename V>
constexpr int lanes_of() {
  return sizeof(V) / sizeof(V{}[0]);
}

// A vector with every lane s (a loop, not `V{} + s`, which would turn -0.0 into +0.0).
template <typename V, typename A>
inline V broadcast(A s) {
  V v;
  for (int i = 0; i < lanes_of<V>(); ++i) v[i] = s;
  return v;
}

template <typename V>
inline V load_unaligned(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The widest vector this build's registers hold.
#if defined(__AVX512F__)
constexpr int kRegisterBytes = 64;
#elif defined(__AVX__)
constexpr int kRegisterBytes = 32;
#else
constexpr int kRegisterBytes = 16;
#endif

// A vector V seen as register-wide pieces: logical lane i is lane i % kPieceLanes of piece
// i / kPieceLanes. Where no register holds a whole V (AVX2, SSE2), code that names the pieces keeps
// GCC in registers; see store_unaligned and LaneSums for what it did otherwise.
template <typename V>
struct RegisterPieces {
  using Elem = std::remove_cvref_t<decltype(V{}[0])>;
  typedef Elem Piece __attribute__((vector_size(kRegisterBytes < sizeof(V) ? kRegisterBytes : sizeof(V))));
  static constexpr int kPieces = sizeof(V) / sizeof(Piece), kPieceLanes = lanes_of<Piece>();

  template <int K>
  static Piece get(const V& v) {
    return slice<K * kPieceLanes>(v, std::make_integer_sequence<int, kPieceLanes>{});
  }
  template <int K>
  static void store(void* p, const V& v) {
    const Piece piece = get<K>(v);
    std::memcpy(static_cast<char*>(p) + K * sizeof(Piece), &piece, sizeof piece);
  }

 private:
  template <int kFirst, int... I>
  static Piece slice(const V& v, std::integer_sequence<int, I...>) {
    return __builtin_shufflevector(v, v, (kFirst + I)...);
  }
};

// Stored piece by piece: GCC expands a 64-byte memcpy under AVX2 into a 32-byte register spill and
// four 16-byte reloads and stores, which every vector store of the guidance and w2s_loss kernels did.
template <typename V>
inline void store_unaligned(void* p, const V& v) {
  using R = RegisterPieces<V>;
  [&]<int... K>(std::integer_sequence<int, K...>) {
    (R::template store<K>(p, v), ...);
  }(std::make_integer_sequence<int, R::kPieces>{});
}

// A lane-wise running sum of 64-byte vectors V, held as register-wide pieces. GCC keeps a loop-carried
// 64-byte vector in memory where no register holds one (AVX2, SSE2) and reloads it through a
// store-forwarding stall every iteration: the AVX2 w2s_loss forward ran at 17 GB/s against
// torch.compile's 26 GB/s before this. Lanes are added as RegisterPieces numbers them, so every build
// adds the same numbers in the same order.
template <typename V>
class LaneSums {
  using R = RegisterPieces<V>;

 public:
  void add(const V& v) {
    [&]<int... K>(std::integer_sequence<int, K...>) {
      ((pieces_[K] = pieces_[K] + R::template get<K>(v)), ...);
    }(std::make_integer_sequence<int, R::kPieces>{});
  }
  typename R::Elem lane(int i) const { return pieces_[i / R::kPieceLanes][i % R::kPieceLanes]; }

 private:
  typename R::Piece pieces_[R::kPieces] = {};  // +0.0 in every lane
};

// bfloat16 is the upper half of a float: widening is exact.
inline F32x16 bf16_to_float(const c10::BFloat16* p) {
  return (F32x16)(__builtin_convertvector(load_unaligned<U16x16>(p), U32x16) << 16);
}

// Round to nearest even, NaN -> 0x7FC0: c10::BFloat16's rule, so vector body and scalar tail agree.
inline void float_to_bf16(c10::BFloat16* p, F32x16 f) {
#if defined(__AVX2__) && !defined(__AVX512F__)
  // AVX2's one-instruction NaN test (vcmpunordps) and blend, which the generic code below cannot
  // reach: 7 instructions per 8 lanes instead of GCC's 12. bf16 guided_step at the video size went
  // from 3.41 to 3.01 ms against torch.compile's 3.4 (AMD EPYC, one thread).
  const auto round = [](const __m256 v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, odd), _mm256_set1_epi32(0x7FFF)), 16);
    return _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0),
                              _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  };
  using R = RegisterPieces<F32x16>;
  const __m256i packed = _mm256_packus_epi32(round((__m256)R::get<0>(f)), round((__m256)R::get<1>(f)));
  // packus works within 128-bit lanes, [a0-3 b0-3 | a4-7 b4-7]; the permute restores element order.
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_permute4x64_epi64(packed, 0xD8));
#else
  const U32x16 bits = (U32x16)f;
  const U32x16 rounded = (bits + (((bits >> 16) & 1u) + 0x7FFFu)) >> 16;
  // All ones where NaN: the sign of 0x7F800000 - |f|'s bits, spread by an arithmetic shift. Branch- and
  // compare-free because GCC lowers a compare of 64-byte vectors (`f != f`, or on the integer bits) to
  // 16 scalar compares per vector under -mavx2, which made the AVX2 bf16 kernels 2x slower.
  const U32x16 is_nan = (U32x16)((I32x16)(0x7F800000u - (bits & 0x7FFFFFFFu)) >> 31);
  store_unaligned(p, __builtin_convertvector((rounded & ~is_nan) | (0x7FC0u & is_nan), U16x16));
#endif
}

inline F32x16 half_to_float(const c10::Half* p) {
#if defined(__AVX512F__)
  return (F32x16)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif defined(__F16C__)
  float out[16];
  _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  _mm256_storeu_ps(out + 8, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8))));
  return load_unaligned<F32x16>(out);
#else
  F32x16 v;
  for (int i = 0; i < 16; ++i) v[i] = static_cast<float>(p[i]);
  return v;
#endif
}

inline void float_to_half(c10::Half* p, F32x16 f) {
#if defined(__AVX512F__)
  const __m256i h = _mm512_cvtps_ph((__m512)f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
#elif defined(__F16C__)
  float in[16];
  store_unaligned(in, f);
  for (int half = 0; half < 2; ++half)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 8 * half),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + 8 * half), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
  for (int i = 0; i < 16; ++i) p[i] = c10::Half(f[i]);
#endif
}

// One SIMD step over T: a float/double vector, or for 16-bit types two float vectors (32 elements),
// which keeps as many loads in flight per iteration as at::vec's AVX-512 build did.
template <typename T>
struct Lanes {
  using acc_t = acc_type<T>;
  using Vec = vec_type<acc_t>;
  static constexpr bool kReduced = !std::is_same_v<T, acc_t>;
  static constexpr int kParts = kReduced ? 2 : 1;
  static constexpr int kVecLanes = lanes_of<Vec>();
  static constexpr int64_t kWidth = int64_t{kVecLanes} * kParts;
  using Pack = std::array<Vec, kParts>;

  static Vec load_part(const T* p) {
    if constexpr (std::is_same_v<T, c10::BFloat16>) return bf16_to_float(p);
    else if constexpr (std::is_same_v<T, c10::Half>) return half_to_float(p);
    else return load_unaligned<Vec>(p);
  }
  static void store_part(T* p, const Vec& v) {
    if constexpr (std::is_same_v<T, c10::BFloat16>) float_to_bf16(p, v);
    else if constexpr (std::is_same_v<T, c10::Half>) float_to_half(p, v);
    else store_unaligned(p, v);
  }
  static Pack load(const T* p) {
    Pack out;
    for (int k = 0; k < kParts; ++k) out[k] = load_part(p + k * kVecLanes);
    return out;
  }
  static void store(T* p, const Pack& v) {
    for (int k = 0; k < kParts; ++k) store_part(p + k * kVecLanes, v[k]);
  }
};

}  // namespace CPU_CAPABILITY
}  // namespace sgg::cpu
