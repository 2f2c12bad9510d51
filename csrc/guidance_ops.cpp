// Kernels of sgg.guide, sgg.guided_step and sgg.guided_step_ for each dispatch key:
//   CPU, CUDA   check the arguments (checks.cpp), allocate, run the selected kernel;
//   Meta        the same checks and output layout with no data: torch.compile's fake kernel.
// Autograd (and, for guided_step_, ADInplaceOrView: the version bump) is registered from Python, by
// `import sgg_kernels` (sgg_kernels/ops.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "checks.h"
#include "cpu/guidance_cpu.h"
#include "runtime_settings.h"
#ifdef SGG_WITH_CUDA  // defined by setup.py when it compiles csrc/cuda
#include "cuda/guidance_cuda.h"
#endif

namespace sgg {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

OptTensor opt(const Tensor* t) { return t ? OptTensor(*t) : std::nullopt; }

void launch_cuda_cpp(const Tensor& out, const OptTensor& x, const Tensor& cond, const OptTensor& uncond,
                     const OptTensor& weak, const Tensor& weights, const OptTensor& step) {
#ifdef SGG_WITH_CUDA
  cuda::guided_step_cuda(out, x, cond, uncond, weak, weights, step);
#else
  TORCH_CHECK(false, "sgg: the cuda backend is selected but this library was built without CUDA; select "
              "triton (SGG_BACKEND=triton or sgg_kernels.set_backend('triton')) or rebuild with nvcc");
#endif
}

// A Python backend (triton or torch): the kernel `import sgg_kernels` registers for this op.
void launch_python_gpu(const Tensor& out, const OptTensor& x, const Tensor& cond, const OptTensor& uncond,
                       const OptTensor& weak, const Tensor& weights, const OptTensor& step) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("sgg::_python_gpu_guided_step", "")
                             .typed<void(const Tensor&, const OptTensor&, const Tensor&, const OptTensor&,
                                         const OptTensor&, const Tensor&, const OptTensor&)>();
  TORCH_CHECK(op.hasKernelForDispatchKey(c10::DispatchKey::CUDA), "sgg: the GPU backend '",
              gpu_backend_name(gpu_backend()), "' runs in Python, and this process has not imported sgg_kernels; "
              "import it, or select the cuda backend (SGG_BACKEND=cuda)");
  op.redispatch(c10::DispatchKeySet(c10::DispatchKey::CUDA), out, x, cond, uncond, weak, weights, step);
}

// out = guided_step(...) (guide when step is absent) on the device's selected kernel; out may be x.
void run(const Tensor& out, const Tensor* x, const Tensor& cond, const OptTensor& uncond, const OptTensor& weak,
         const Tensor& weights, const Tensor* step) {
  if (cond.is_cpu()) return cpu::guided_step_cpu(out, opt(x), cond, uncond, weak, weights, opt(step));
  if (gpu_backend() == GpuBackend::kCuda) return launch_cuda_cpp(out, opt(x), cond, uncond, weak, weights, opt(step));
  launch_python_gpu(out, opt(x), cond, uncond, weak, weights, opt(step));
}

Tensor guide(const Tensor& cond, const OptTensor& uncond, const OptTensor& weak, const Tensor& weights) {
  check_guidance_args("guide", nullptr, cond, uncond, weak, weights, nullptr, false);
  Tensor out = at::empty_like(cond);
  run(out, nullptr, cond, uncond, weak, weights, nullptr);
  return out;
}

Tensor guided_step(const Tensor& x, const Tensor& cond, const OptTensor& uncond, const OptTensor& weak,
                   const Tensor& weights, const Tensor& step) {
  check_guidance_args("guided_step", &x, cond, uncond, weak, weights, &step, false);
  Tensor out = at::empty_like(x);
  run(out, &x, cond, uncond, weak, weights, &step);
  return out;
}

void guided_step_(const Tensor& x, const Tensor& cond, const OptTensor& uncond, const OptTensor& weak,
                  const Tensor& weights, const Tensor& step) {
  check_guidance_args("guided_step_", &x, cond, uncond, weak, weights, &step, true);
  run(x, &x, cond, uncond, weak, weights, &step);
}

Tensor guide_meta(const Tensor& cond, const OptTensor& uncond, const OptTensor& weak, const Tensor& weights) {
  check_guidance_args("guide", nullptr, cond, uncond, weak, weights, nullptr, false);
  return at::empty_like(cond);
}

Tensor guided_step_meta(const Tensor& x, const Tensor& cond, const OptTensor& uncond, const OptTensor& weak,
                        const Tensor& weights, const Tensor& step) {
  check_guidance_args("guided_step", &x, cond, uncond, weak, weights, &step, false);
  return at::empty_like(x);
}

void guided_step__meta(const Tensor& x, const Tensor& cond, const OptTensor& uncond, const OptTensor& weak,
                       const Tensor& weights, const Tensor& step) {
  check_guidance_args("guided_step_", &x, cond, uncond, weak, weights, &step, true);
}

// sgg::_launch: one compiled backend, called directly (tests and benchmarks); no argument checks.
void launch(std::string_view backend, const Tensor& out, const OptTensor& x, const Tensor& cond,
            const OptTensor& uncond, const OptTensor& weak, const Tensor& weights, const OptTensor& step) {
  if (backend == "cpu") return cpu::guided_step_cpu(out, x, cond, uncond, weak, weights, step);
  TORCH_CHECK_VALUE(backend == "cuda", "sgg._launch: backend must be cpu or cuda, got '", backend, "'");
  launch_cuda_cpp(out, x, cond, uncond, weak, weights, step);
}

}  // namespace
}  // namespace sgg

TORCH_LIBRARY_IMPL(sgg, CPU, m) {
  m.impl("guide", &sgg::guide);
  m.impl("guided_step", &sgg::guided_step);
  m.impl("guided_step_", &sgg::guided_step_);
}

// The CUDA kernels also serve the Triton and torch backends, through sgg::_python_gpu_guided_step.
TORCH_LIBRARY_IMPL(sgg, CUDA, m) {
  m.impl("guide", &sgg::guide);
  m.impl("guided_step", &sgg::guided_step);
  m.impl("guided_step_", &sgg::guided_step_);
}

TORCH_LIBRARY_IMPL(sgg, Meta, m) {
  m.impl("guide", &sgg::guide_meta);
  m.impl("guided_step", &sgg::guided_step_meta);
  m.impl("guided_step_", &sgg::guided_step__meta);
}

TORCH_LIBRARY_IMPL(sgg, CompositeImplicitAutograd, m) { m.impl("_launch", &sgg::launch); }
