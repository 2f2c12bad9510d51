// CPU kernels of sgg.w2s_loss (csrc/cpu/w2s_loss_cpu.cpp). Operands are contiguous and validated.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace sgg::cpu {

// loss [B] (float32, float64 for float64 operands) = the per-sample W2S losses.
void w2s_loss_forward_cpu(const at::Tensor& loss, const at::Tensor& v, const at::Tensor& u,
                          const std::optional<at::Tensor>& weak, const std::optional<at::Tensor>& mid,
                          const at::Tensor& coefs);

// grad_v and grad_mid (given exactly when mid is) of sum(grad * loss).
void w2s_loss_backward_cpu(const at::Tensor& grad_v, const std::optional<at::Tensor>& grad_mid,
                           const at::Tensor& grad, const at::Tensor& v, const at::Tensor& u,
                           const std::optional<at::Tensor>& weak, const std::optional<at::Tensor>& mid,
                           const at::Tensor& coefs);

}  // namespace sgg::cpu
