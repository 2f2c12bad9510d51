// CPU kernels of sgg.w2s_loss and sgg.w2s_loss_backward (op_kernels.h; autograd and autocast are
// registered in sgg_kernels/w2s_loss.py), and direct calls of the CPU launchers for tests and
// benchmarks (operands must be contiguous). CUDA runs Triton: cuda/cuda_ops.cpp.
#include "cpu/w2s_loss_cpu.h"
#include "op_kernels.h"
#include "twins.h"

STABLE_TORCH_LIBRARY_IMPL(sgg, CPU, m) {
  sgg::impl_with_twin(m, "w2s_loss", TORCH_BOX(&sgg::w2s_loss_kernel<&sgg::cpu::w2s_loss_forward_cpu>));
  sgg::impl_with_twin(m, "w2s_loss_backward",
                      TORCH_BOX(&sgg::w2s_loss_backward_kernel<&sgg::cpu::w2s_loss_backward_cpu>));
  m.impl("_w2s_loss_cpu", TORCH_BOX(&sgg::cpu::w2s_loss_forward_cpu));
  m.impl("_w2s_loss_backward_cpu", TORCH_BOX(&sgg::cpu::w2s_loss_backward_cpu));
}
