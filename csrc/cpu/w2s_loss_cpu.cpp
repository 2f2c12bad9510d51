// CPU kernels of sgg.w2s_loss (registered in csrc/w2s_loss_ops.cpp; autograd in sgg_kernels/w2s_loss.py):
//
//   loss_b = mean((v - u - lam*(v - weak))^2) + rho_vm*mean((v - mid)^2) + rho_mu*mean((mid - u)^2)
//   grad_v   = g_b*2/n * ((v - u - lam*(v - weak)) + rho_vm*(v - mid))      (weak under stop-gradient)
//   grad_mid = g_b*2/n * (rho_mu*(mid - u) - rho_vm*(v - mid))
//
// One read of the operands per pass. Operands are contiguous (the Python side ensures it).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "w2s_loss_cpu.h"

namespace sgg::cpu {
namespace {

// Each sample is cut into chunks of this fixed size; chunk sums run in parallel and are then added
// in chunk order, so the loss does not depend on the thread count. 4096 elements keep the float32
// partial sums short (~256 additions per SIMD lane) and the partial table small.
constexpr int64_t kChunk = 4096;
// Chunks per task (~64K elements): amortises the OpenMP fork, as in the guidance kernels.
constexpr int64_t kChunksPerTask = 16;

template <typename T>
struct Operands {
  const T *v, *u, *weak, *mid;
  const float* coefs;
  int64_t coef_stride;  // 0 for shared coefs [3], 3 for per-sample [B, 3]
  int64_t batch, n, chunks;
};

template <typename T>
Operands<T> operands(const at::Tensor& v, const at::Tensor& u, const std::optional<at::Tensor>& weak,
                     const std::optional<at::Tensor>& mid, const at::Tensor& coefs) {
  // Memory-safety guards for direct calls; user-facing checks are in csrc/checks.cpp.
  for (const at::Tensor* t : {&v, &u, weak ? &*weak : nullptr, mid ? &*mid : nullptr})
    TORCH_CHECK(!t || (t->is_cpu() && t->is_contiguous() && t->sizes() == v.sizes() && t->scalar_type() == v.scalar_type()),
                "sgg.w2s_loss: operands must be contiguous CPU tensors and share v's shape and dtype");
  const int64_t batch = v.size(0), n = batch ? v.numel() / batch : 0;
  TORCH_CHECK(coefs.is_contiguous() && coefs.scalar_type() == at::kFloat &&
                  (coefs.numel() == 3 || (coefs.dim() == 2 && coefs.size(0) == batch && coefs.size(1) == 3)),
              "sgg.w2s_loss: coefs must be contiguous float32 [3] or [B, 3]");
  return {v.data_ptr<T>(), u.data_ptr<T>(), weak ? weak->data_ptr<T>() : nullptr,
          mid ? mid->data_ptr<T>() : nullptr, coefs.data_ptr<float>(), coefs.dim() == 2 ? 3 : 0,
          batch, n, (n + kChunk - 1) / kChunk};
}

// Runs body(sample, begin, end) over every chunk, in parallel.
template <typename T, typename Body>
void for_each_chunk(const Operands<T>& p, const Body& body) {
  at::parallel_for(0, p.batch * p.chunks, kChunksPerTask, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const int64_t sample = c / p.chunks, offset = (c % p.chunks) * kChunk;
      body(sample, c, sample * p.n + offset, sample * p.n + std::min(p.n, offset + kChunk));
    }
  });
}

template <typename T, bool kWeak, bool kMid>
void forward(const at::Tensor& loss, const Operands<T>& p) {
  using acc_t = at::opmath_type<T>;
  std::vector<double> partial(p.batch * p.chunks);
  for_each_chunk(p, [&](int64_t s, int64_t c, int64_t begin, int64_t end) {
    const float* k = p.coefs + s * p.coef_stride;
    const acc_t lam = k[0], rho_vm = k[1], rho_mu = k[2];
    acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = begin; i < end; ++i) {
      const acc_t v = p.v[i], u = p.u[i];
      acc_t r = v - u;
      if constexpr (kWeak) r = r - lam * (v - acc_t(p.weak[i]));
      acc_t e = r * r;
      if constexpr (kMid) {
        const acc_t m = p.mid[i], vm = v - m, mu = m - u;
        e = e + rho_vm * (vm * vm) + rho_mu * (mu * mu);
      }
      sum += e;
    }
    partial[c] = sum;
  });
  acc_t* out = loss.data_ptr<acc_t>();
  for (int64_t s = 0; s < p.batch; ++s) {
    double total = 0;
    for (int64_t c = 0; c < p.chunks; ++c) total += partial[s * p.chunks + c];
    out[s] = acc_t(total / double(p.n));  // 0/0 = NaN for empty samples, as the mean of nothing
  }
}

template <typename T, bool kWeak, bool kMid>
void backward(T* grad_v, T* grad_mid, const at::Tensor& grad, const Operands<T>& p) {
  using acc_t = at::opmath_type<T>;
  const acc_t* g = grad.data_ptr<acc_t>();
  for_each_chunk(p, [&](int64_t s, int64_t, int64_t begin, int64_t end) {
    const float* k = p.coefs + s * p.coef_stride;
    const acc_t lam = k[0], rho_vm = k[1], rho_mu = k[2];
    const acc_t scale = g[s] * (acc_t(2) / acc_t(p.n));
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const acc_t v = p.v[i], u = p.u[i];
      acc_t r = v - u;
      if constexpr (kWeak) r = r - lam * (v - acc_t(p.weak[i]));
      if constexpr (kMid) {
        const acc_t m = p.mid[i], vm = v - m;
        grad_v[i] = T(scale * (r + rho_vm * vm));
        grad_mid[i] = T(scale * (rho_mu * (m - u) - rho_vm * vm));
      } else {
        grad_v[i] = T(scale * r);
      }
    }
  });
}

// Calls f.template operator()<kWeak, kMid>() for the operands present.
template <typename F>
void dispatch_presence(bool has_weak, bool has_mid, const F& f) {
  if (has_weak && has_mid) f.template operator()<true, true>();
  else if (has_weak) f.template operator()<true, false>();
  else if (has_mid) f.template operator()<false, true>();
  else f.template operator()<false, false>();
}

}  // namespace

void w2s_loss_forward_cpu(const at::Tensor& loss, const at::Tensor& v, const at::Tensor& u,
                          const std::optional<at::Tensor>& weak, const std::optional<at::Tensor>& mid,
                          const at::Tensor& coefs) {
  TORCH_CHECK(loss.is_contiguous() && loss.numel() == v.size(0) &&
                  loss.scalar_type() == (v.scalar_type() == at::kDouble ? at::kDouble : at::kFloat),
              "sgg.w2s_loss: loss must be a contiguous [B] tensor of the accumulation dtype");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "sgg_w2s_loss_forward_cpu", [&] {
    const auto p = operands<scalar_t>(v, u, weak, mid, coefs);
    if (p.batch == 0) return;
    dispatch_presence(weak.has_value(), mid.has_value(),
                      [&]<bool kW, bool kM>() { forward<scalar_t, kW, kM>(loss, p); });
  });
}

void w2s_loss_backward_cpu(const at::Tensor& grad_v, const std::optional<at::Tensor>& grad_mid,
                           const at::Tensor& grad, const at::Tensor& v, const at::Tensor& u,
                           const std::optional<at::Tensor>& weak, const std::optional<at::Tensor>& mid,
                           const at::Tensor& coefs) {
  TORCH_CHECK(grad_mid.has_value() == mid.has_value(), "sgg.w2s_loss: grad_mid is given exactly when mid is");
  for (const at::Tensor* t : {&grad_v, grad_mid ? &*grad_mid : nullptr})
    TORCH_CHECK(!t || (t->is_contiguous() && t->sizes() == v.sizes() && t->scalar_type() == v.scalar_type()),
                "sgg.w2s_loss: gradients must be contiguous and share v's shape and dtype");
  TORCH_CHECK(grad.is_contiguous() && grad.numel() == v.size(0) &&
                  grad.scalar_type() == (v.scalar_type() == at::kDouble ? at::kDouble : at::kFloat),
              "sgg.w2s_loss: grad must be a contiguous [B] tensor of the accumulation dtype");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "sgg_w2s_loss_backward_cpu", [&] {
    const auto p = operands<scalar_t>(v, u, weak, mid, coefs);
    if (p.batch * p.n == 0) return;
    scalar_t* gm = grad_mid ? grad_mid->data_ptr<scalar_t>() : nullptr;
    dispatch_presence(weak.has_value(), mid.has_value(), [&]<bool kW, bool kM>() {
      backward<scalar_t, kW, kM>(grad_v.data_ptr<scalar_t>(), gm, grad, p);
    });
  });
}

}  // namespace sgg::cpu
