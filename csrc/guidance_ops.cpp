// CPU kernels of sgg.guide, sgg.guided_step and sgg.guided_step_ (op_kernels.h), and the CPU side of
// the internal sgg::_launch. The CUDA kernels are in the CUDA library (cuda/cuda_ops.cpp).
#include "cpu/guidance_cpu.h"
#include "op_kernels.h"
#include "twins.h"

namespace sgg {
namespace {

// sgg::_launch: one compiled backend, called directly (tests and benchmarks); no argument checks
// beyond memory safety (params_from_tensors.h). Each device's library registers its own.
void launch_cpu(std::string backend, Tensor out, OptTensor x, Tensor cond, OptTensor uncond, OptTensor weak,
                Tensor weights, OptTensor step, OptTensor noise) {
  SGG_CHECK(backend == "cpu", "sgg._launch: backend '", backend, "' does not run CPU tensors; use cpu");
  cpu::guided_step_cpu(out, x, cond, uncond, weak, weights, step, noise);
}

}  // namespace
}  // namespace sgg

STABLE_TORCH_LIBRARY_IMPL(sgg, CPU, m) {
  sgg::impl_with_twin(m, "guide", TORCH_BOX(&sgg::guide_kernel<&sgg::cpu::guided_step_cpu>));
  sgg::impl_with_twin(m, "guided_step", TORCH_BOX(&sgg::guided_step_kernel<&sgg::cpu::guided_step_cpu>));
  sgg::impl_with_twin(m, "guided_step_", TORCH_BOX(&sgg::guided_step__kernel<&sgg::cpu::guided_step_cpu>));
  m.impl("_launch", TORCH_BOX(&sgg::launch_cpu));
}
