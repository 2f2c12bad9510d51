// SIMD kernels of sgg.w2s_loss, included once per CPU capability (kernels_{default,avx2,avx512}.cpp)
// like the guidance kernel. Forward writes one partial sum per chunk (vector lanes added in a fixed
// order, then the scalar tail); backward is elementwise, with the same rule in the vector body and
// the tail, so it is bit-identical to a scalar loop.
#pragma once
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <array>

#include "vec_lanes.h"
#include "w2s_loss_params.h"

namespace sgg::cpu {
inline namespace CPU_CAPABILITY {

// Runs body(sample, chunk, begin, end) over every chunk, in parallel.
template <typename Body>
void for_each_w2s_chunk(const W2SParams& p, const Body& body) {
  torch::stable::parallel_for(0, p.batch * p.chunks, kW2SChunksPerTask, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const int64_t sample = c / p.chunks, offset = (c % p.chunks) * kW2SChunk;
      body(sample, c, sample * p.n + offset, sample * p.n + std::min(p.n, offset + kW2SChunk));
    }
  });
}

// The operand pointers, to be held as locals of each chunk's body: the vector stores are memcpy's,
// which may alias any object, so GCC reloaded pointers captured by reference (two loads each) in
// every iteration of the backward loop.
template <typename T>
std::array<const T*, 4> operands(const W2SParams& p) {
  return {static_cast<const T*>(p.v), static_cast<const T*>(p.u), static_cast<const T*>(p.weak),
          static_cast<const T*>(p.mid)};
}

template <typename T, bool kWeak, bool kMid>
void w2s_forward_pass(const W2SParams& p, double* partial) {
  using L = Lanes<T>;
  using acc_t = typename L::acc_t;
  using Vec = typename L::Vec;
  for_each_w2s_chunk(p, [&](int64_t s, int64_t c, int64_t begin, int64_t end) {
    const auto [v, u, weak, mid] = operands<T>(p);
    const float* k = p.coefs + s * p.coef_stride;
    const acc_t lam = k[0], rho_vm = k[1], rho_mu = k[2];
    const Vec v_lam = broadcast<Vec>(lam), v_rho_vm = broadcast<Vec>(rho_vm), v_rho_mu = broadcast<Vec>(rho_mu);
    std::array<LaneSums<Vec>, L::kParts> sums;
    int64_t i = begin;
    for (; i + L::kWidth <= end; i += L::kWidth) {
      const auto vv = L::load(v + i), uu = L::load(u + i);
      typename L::Pack ww{}, mm{};
      if constexpr (kWeak) ww = L::load(weak + i);
      if constexpr (kMid) mm = L::load(mid + i);
      for (int part = 0; part < L::kParts; ++part)
        sums[part].add(w2s_error<kWeak, kMid>(vv[part], uu[part], ww[part], mm[part], v_lam, v_rho_vm, v_rho_mu));
    }
    acc_t sum = 0;  // lanes added in lane order, the same in every build
    for (const auto& lanes : sums)
      for (int lane = 0; lane < L::kVecLanes; ++lane) sum += lanes.lane(lane);
    for (; i < end; ++i)
      sum += w2s_error<kWeak, kMid>(acc_t(v[i]), acc_t(u[i]), kWeak ? acc_t(weak[i]) : acc_t(0),
                                    kMid ? acc_t(mid[i]) : acc_t(0), lam, rho_vm, rho_mu);
    partial[c] = sum;
  });
}

template <typename T, bool kWeak, bool kMid>
void w2s_backward_pass(const W2SParams& p, T* grad_v, T* grad_mid, const acc_type<T>* grad) {
  using L = Lanes<T>;
  using acc_t = typename L::acc_t;
  using Vec = typename L::Vec;
  for_each_w2s_chunk(p, [&](int64_t s, int64_t, int64_t begin, int64_t end) {
    const auto [v, u, weak, mid] = operands<T>(p);
    T* const out_v = grad_v;  // locals too (see operands)
    T* const out_mid = grad_mid;
    const float* k = p.coefs + s * p.coef_stride;
    const acc_t lam = k[0], rho_vm = k[1], rho_mu = k[2];
    const acc_t scale = grad[s] * (acc_t(2) / acc_t(p.n));
    const Vec v_lam = broadcast<Vec>(lam), v_rho_vm = broadcast<Vec>(rho_vm), v_rho_mu = broadcast<Vec>(rho_mu),
              v_scale = broadcast<Vec>(scale);
    int64_t i = begin;
    for (; i + L::kWidth <= end; i += L::kWidth) {
      const auto vv = L::load(v + i), uu = L::load(u + i);
      typename L::Pack ww{}, mm{}, gv, gm;
      if constexpr (kWeak) ww = L::load(weak + i);
      if constexpr (kMid) mm = L::load(mid + i);
      for (int part = 0; part < L::kParts; ++part)
        w2s_grads<kWeak, kMid>(vv[part], uu[part], ww[part], mm[part], v_lam, v_rho_vm, v_rho_mu, v_scale, gv[part],
                               gm[part]);
      L::store(out_v + i, gv);
      if constexpr (kMid) L::store(out_mid + i, gm);
    }
    for (; i < end; ++i) {
      acc_t gv, gm;
      w2s_grads<kWeak, kMid>(acc_t(v[i]), acc_t(u[i]), kWeak ? acc_t(weak[i]) : acc_t(0),
                             kMid ? acc_t(mid[i]) : acc_t(0), lam, rho_vm, rho_mu, scale, gv, gm);
      out_v[i] = T(gv);
      if constexpr (kMid) out_mid[i] = T(gm);
    }
  });
}

template <typename T>
void w2s_forward_kernel(const W2SParams& p, double* partial) {
  dispatch_w2s_presence(p, [&]<bool kW, bool kM>() { w2s_forward_pass<T, kW, kM>(p, partial); });
}

template <typename T>
void w2s_backward_kernel(const W2SParams& p, T* grad_v, T* grad_mid, const acc_type<T>* grad) {
  dispatch_w2s_presence(p, [&]<bool kW, bool kM>() { w2s_backward_pass<T, kW, kM>(p, grad_v, grad_mid, grad); });
}

}  // namespace CPU_CAPABILITY
}  // namespace sgg::cpu

#define SGG_INSTANTIATE_W2S_KERNEL(T)                                                                     \
  template void sgg::cpu::CPU_CAPABILITY::w2s_forward_kernel<T>(const sgg::cpu::W2SParams&, double*);    \
  template void sgg::cpu::CPU_CAPABILITY::w2s_backward_kernel<T>(const sgg::cpu::W2SParams&, T*, T*,     \
                                                                 const acc_type<T>*);
#define SGG_INSTANTIATE_W2S_KERNELS      \
  SGG_INSTANTIATE_W2S_KERNEL(float)      \
  SGG_INSTANTIATE_W2S_KERNEL(double)     \
  SGG_INSTANTIATE_W2S_KERNEL(c10::BFloat16) \
  SGG_INSTANTIATE_W2S_KERNEL(c10::Half)
