// Torch-independent description of one sgg.w2s_loss pass over contiguous operands, and the
// per-element rule shared by the scalar and SIMD code of every CPU build:
//
//   error    = (v - u - lam*(v - weak))^2 + rho_vm*(v - mid)^2 + rho_mu*(mid - u)^2
//   grad_v   = scale * ((v - u - lam*(v - weak)) + rho_vm*(v - mid))         (weak under stop-gradient)
//   grad_mid = scale * (rho_mu*(mid - u) - rho_vm*(v - mid)),   scale = g_b * 2 / n
#pragma once
#include <cstdint>

namespace sgg::cpu {

// Each sample is cut into chunks of this fixed size; chunk sums run in parallel and are then added
// in chunk order, so the loss does not depend on the thread count. 4096 elements keep the float32
// partial sums short (~256 additions per SIMD lane) and the partial table small.
constexpr int64_t kW2SChunk = 4096;
// Chunks per task (~64K elements): amortises the OpenMP fork, as in the guidance kernels.
constexpr int64_t kW2SChunksPerTask = 16;

struct W2SParams {
  const void *v, *u, *weak, *mid;  // weak and mid may be nullptr
  const float* coefs;              // (lam, rho_vm, rho_mu) per sample
  int64_t coef_stride;             // 0 for shared coefs [3], 3 for per-sample [B, 3]
  int64_t batch, n, chunks;        // n elements per sample, chunks = ceil(n / kW2SChunk)
};

template <bool kWeak, bool kMid, typename V>
inline V w2s_error(V v, V u, V weak, V mid, V lam, V rho_vm, V rho_mu) {
  V r = v - u;
  if constexpr (kWeak) r = r - lam * (v - weak);
  V e = r * r;
  if constexpr (kMid) {
    const V vm = v - mid, mu = mid - u;
    e = e + rho_vm * (vm * vm) + rho_mu * (mu * mu);
  }
  return e;
}

template <bool kWeak, bool kMid, typename V>
inline void w2s_grads(V v, V u, V weak, V mid, V lam, V rho_vm, V rho_mu, V scale, V& grad_v, V& grad_mid) {
  V r = v - u;
  if constexpr (kWeak) r = r - lam * (v - weak);
  if constexpr (kMid) {
    const V vm = v - mid;
    grad_v = scale * (r + rho_vm * vm);
    grad_mid = scale * (rho_mu * (mid - u) - rho_vm * vm);
  } else {
    grad_v = scale * r;
  }
}

// Calls f.template operator()<kWeak, kMid>() for the operands present.
template <typename F>
void dispatch_w2s_presence(const W2SParams& p, const F& f) {
  if (p.weak && p.mid) f.template operator()<true, true>();
  else if (p.weak) f.template operator()<true, false>();
  else if (p.mid) f.template operator()<false, true>();
  else f.template operator()<false, false>();
}

}  // namespace sgg::cpu
