// CPU launchers of sgg.w2s_loss (registered in csrc/w2s_loss_ops.cpp; autograd in sgg_kernels/w2s_loss.py):
// they pick the SIMD build for this processor (kernels_{default,avx2,avx512}.cpp, as the guidance
// kernel does) and add the per-chunk partial sums in chunk order. Operands are contiguous.
#include <vector>

#include "acc_type.h"
#include "guidance_cpu.h"
#include "w2s_loss_cpu.h"
#include "w2s_loss_params.h"

#define SGG_DECLARE_W2S(CAP)                                                                              \
  namespace sgg::cpu::CAP {                                                                               \
  template <typename T>                                                                                   \
  void w2s_forward_kernel(const W2SParams& p, double* partial);                                           \
  template <typename T>                                                                                   \
  void w2s_backward_kernel(const W2SParams& p, T* grad_v, T* grad_mid, const acc_type<T>* grad);   \
  }
SGG_DECLARE_W2S(DEFAULT)
SGG_DECLARE_W2S(AVX2)
SGG_DECLARE_W2S(AVX512)

namespace sgg::cpu {
namespace {

template <typename T>
W2SParams params(const Tensor& v, const Tensor& u, const OptTensor& weak, const OptTensor& mid, const Tensor& coefs) {
  // Memory-safety guards for direct calls; user-facing checks are in csrc/checks.cpp.
  SGG_CHECK(v.dim() >= 1, "sgg.w2s_loss: v needs a batch dimension");
  for (const Tensor* t : {&v, &u, weak ? &*weak : nullptr, mid ? &*mid : nullptr})
    SGG_CHECK(!t || (t->is_cpu() && t->is_contiguous() && same_sizes(*t, v) && t->scalar_type() == v.scalar_type()),
              "sgg.w2s_loss: operands must be contiguous CPU tensors and share v's shape and dtype");
  const int64_t batch = v.size(0), n = batch ? v.numel() / batch : 0;
  SGG_CHECK(coefs.is_contiguous() && coefs.is_cpu() && coefs.scalar_type() == ScalarType::Float &&
                ((coefs.dim() == 1 && coefs.size(0) == 3) ||
                 (coefs.dim() == 2 && coefs.size(0) == batch && coefs.size(1) == 3)),
            "sgg.w2s_loss: coefs must be contiguous float32 [3] or [B, 3]");
  return {v.data_ptr(), u.data_ptr(), weak ? weak->data_ptr() : nullptr, mid ? mid->data_ptr() : nullptr,
          static_cast<const float*>(coefs.data_ptr()), coefs.dim() == 2 ? 3 : 0, batch, n,
          (n + kW2SChunk - 1) / kW2SChunk};
}

template <typename T>
void run_forward(const W2SParams& p, double* partial) {
  switch (capability()) {
    case Capability::kAVX512: return AVX512::w2s_forward_kernel<T>(p, partial);
    case Capability::kAVX2: return AVX2::w2s_forward_kernel<T>(p, partial);
    default: return DEFAULT::w2s_forward_kernel<T>(p, partial);
  }
}

template <typename T>
void run_backward(const W2SParams& p, T* grad_v, T* grad_mid, const acc_type<T>* grad) {
  switch (capability()) {
    case Capability::kAVX512: return AVX512::w2s_backward_kernel<T>(p, grad_v, grad_mid, grad);
    case Capability::kAVX2: return AVX2::w2s_backward_kernel<T>(p, grad_v, grad_mid, grad);
    default: return DEFAULT::w2s_backward_kernel<T>(p, grad_v, grad_mid, grad);
  }
}

}  // namespace

void w2s_loss_forward_cpu(Tensor loss, Tensor v, Tensor u, OptTensor weak, OptTensor mid, Tensor coefs) {
  SGG_CHECK(v.dim() >= 1 && loss.is_cpu() && loss.is_contiguous() && loss.numel() == v.size(0) &&
                loss.scalar_type() == accumulation_type(v),
            "sgg.w2s_loss: loss must be a contiguous [B] tensor of the accumulation dtype");
  dispatch_float(v.scalar_type(), "w2s_loss", [&]<typename T>() {
    using acc_t = acc_type<T>;
    const W2SParams p = params<T>(v, u, weak, mid, coefs);
    if (p.batch == 0) return;
    std::vector<double> partial(p.batch * p.chunks);
    run_forward<T>(p, partial.data());
    acc_t* out = static_cast<acc_t*>(loss.data_ptr());
    for (int64_t s = 0; s < p.batch; ++s) {
      double total = 0;
      for (int64_t c = 0; c < p.chunks; ++c) total += partial[s * p.chunks + c];
      out[s] = acc_t(total / double(p.n));  // 0/0 = NaN for empty samples, as the mean of nothing
    }
  });
}

void w2s_loss_backward_cpu(Tensor grad_v, OptTensor grad_mid, Tensor grad, Tensor v, Tensor u, OptTensor weak,
                           OptTensor mid, Tensor coefs) {
  SGG_CHECK(grad_mid.has_value() == mid.has_value(), "sgg.w2s_loss: grad_mid is given exactly when mid is");
  SGG_CHECK(v.dim() >= 1, "sgg.w2s_loss: v needs a batch dimension");
  for (const Tensor* t : {&grad_v, grad_mid ? &*grad_mid : nullptr})
    SGG_CHECK(!t || (t->is_cpu() && t->is_contiguous() && same_sizes(*t, v) && t->scalar_type() == v.scalar_type()),
              "sgg.w2s_loss: gradients must be contiguous and share v's shape and dtype");
  SGG_CHECK(grad.is_cpu() && grad.is_contiguous() && grad.numel() == v.size(0) &&
                grad.scalar_type() == accumulation_type(v),
            "sgg.w2s_loss: grad must be a contiguous [B] tensor of the accumulation dtype");
  dispatch_float(v.scalar_type(), "w2s_loss_backward", [&]<typename T>() {
    const W2SParams p = params<T>(v, u, weak, mid, coefs);
    if (p.batch * p.n == 0) return;
    run_backward<T>(p, static_cast<T*>(grad_v.data_ptr()), grad_mid ? static_cast<T*>(grad_mid->data_ptr()) : nullptr,
                    static_cast<const acc_type<T>*>(grad.data_ptr()));
  });
}

}  // namespace sgg::cpu
