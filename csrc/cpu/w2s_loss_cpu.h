// CPU kernels of sgg.w2s_loss (csrc/cpu/w2s_loss_cpu.cpp). Operands are contiguous and validated.
#pragma once
#include "../stable_tensor.h"

namespace sgg::cpu {

// loss [B] (float32, float64 for float64 operands) = the per-sample W2S losses.
void w2s_loss_forward_cpu(Tensor loss, Tensor v, Tensor u, OptTensor weak, OptTensor mid, Tensor coefs);

// grad_v and grad_mid (given exactly when mid is) of sum(grad * loss).
void w2s_loss_backward_cpu(Tensor grad_v, OptTensor grad_mid, Tensor grad, Tensor v, Tensor u, OptTensor weak,
                           OptTensor mid, Tensor coefs);

}  // namespace sgg::cpu
