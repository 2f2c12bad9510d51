// ATen side of the CUDA kernels: tensors -> GuidanceParams, dtype -> kernel instantiation, current
// stream and device. Registered for the CUDA key in csrc/guidance_ops.cpp.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "../params_from_tensors.h"
#include "guidance_cuda.h"
#include "guidance_kernel.cuh"

namespace sgg::cuda {

void guided_step_cuda(const at::Tensor& out, const std::optional<at::Tensor>& x, const at::Tensor& cond,
                      const std::optional<at::Tensor>& uncond, const std::optional<at::Tensor>& weak,
                      const at::Tensor& weights, const std::optional<at::Tensor>& step) {
  TORCH_CHECK(cond.is_cuda(), "sgg: guided_step_cuda needs CUDA tensors, got cond on ", cond.device());
  const c10::cuda::CUDAGuard guard(cond.device());
  with_params(out, x, cond, uncond, weak, weights, step, [&](const GuidanceParams& p) {
    if (p.batch * p.per_sample == 0) return;
    // Cached by ATen per device: no driver query per call.
    const Launch launch{at::cuda::getCurrentDeviceProperties()->multiProcessorCount,
                        at::cuda::getCurrentCUDAStream().stream()};
    switch (cond.scalar_type()) {
      case at::kFloat: launch_guidance<float>(p, launch); break;
      case at::kDouble: launch_guidance<double>(p, launch); break;
      case at::kHalf: launch_guidance<__half>(p, launch); break;
      case at::kBFloat16: launch_guidance<__nv_bfloat16>(p, launch); break;
      default: TORCH_CHECK(false, "sgg: guided_step_cuda does not support dtype ", cond.scalar_type());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace sgg::cuda
