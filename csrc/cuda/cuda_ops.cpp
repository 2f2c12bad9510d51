// The CUDA library: CUDA kernels of the public ops and of sgg::_launch. Each checks the call and
// allocates (op_kernels.h), makes the operands' device current, then runs this library's CUDA C++
// kernel or, when the selected backend is a Python one (triton or torch), hands the validated call
// to the sgg::_python_gpu_* op that `import sgg_kernels` registers (Triton launches on the current
// device and its stream, hence the guard). w2s_loss has no CUDA C++ kernel: it always goes that way.
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>

#include <array>
#include <string>

#include "../op_kernels.h"
#include "../params_from_tensors.h"
#include "../runtime_settings.h"
#include "../twins.h"
#include "guidance_cuda.h"

namespace sgg {
namespace {

using torch::stable::detail::from;

cuda::Dtype cuda_dtype(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return cuda::Dtype::kFloat;
    case ScalarType::Double: return cuda::Dtype::kDouble;
    case ScalarType::Half: return cuda::Dtype::kHalf;
    case ScalarType::BFloat16: return cuda::Dtype::kBFloat16;
    default: fail("sgg: the CUDA kernel does not support dtype ", dtype_name(t));
  }
}

void run_cuda_cpp(const Tensor& out, const OptTensor& x, const Tensor& cond, const OptTensor& uncond,
                  const OptTensor& weak, const Tensor& weights, const OptTensor& step, const OptTensor& noise) {
  SGG_CHECK(cond.is_cuda(), "sgg: the cuda kernel needs CUDA tensors, got cond on ", device_of(cond));
  const int32_t device = cond.get_device_index();
  void* stream = nullptr;
  SGG_CHECK(aoti_torch_get_current_cuda_stream(device, &stream) == AOTI_TORCH_SUCCESS,
            "sgg: could not get the current CUDA stream of cuda:", device);
  with_params(out, x, cond, uncond, weak, weights, step, noise, [&](const GuidanceParams& p) {
    const int error = cuda::launch_guidance(p, cuda_dtype(cond.scalar_type()), device, stream);
    SGG_CHECK(error == 0, "sgg: CUDA kernel launch failed: ", cuda::error_string(error));
  });
}

// Calls the Python kernel of `op` with `args`; a missing kernel is named with the fix.
template <size_t N>
void call_python_gpu(const char* op, std::array<StableIValue, N> args) {
  if (torch_call_dispatcher(op, "", args.data(), TORCH_ABI_VERSION) == AOTI_TORCH_SUCCESS) return;
  fail("sgg: the GPU backend '", gpu_backend_name(gpu_backend()), "' runs ", op, " in Python, which failed or is not "
       "registered: run `import sgg_kernels` in this process (it registers the Triton and torch backends), or select "
       "the cuda backend (SGG_BACKEND=cuda). The error is printed above");
}

void run_cuda(const Tensor& out, const OptTensor& x, const Tensor& cond, const OptTensor& uncond,
              const OptTensor& weak, const Tensor& weights, const OptTensor& step, const OptTensor& noise) {
  const torch::stable::accelerator::DeviceGuard guard(cond.get_device_index());
  if (gpu_backend() == GpuBackend::kCuda) return run_cuda_cpp(out, x, cond, uncond, weak, weights, step, noise);
  call_python_gpu<8>("sgg::_python_gpu_guided_step", {from(out), from(x), from(cond), from(uncond), from(weak),
                                                      from(weights), from(step), from(noise)});
}

void w2s_forward_cuda(Tensor loss, Tensor v, Tensor u, OptTensor weak, OptTensor mid, Tensor coefs) {
  const torch::stable::accelerator::DeviceGuard guard(v.get_device_index());
  call_python_gpu<6>("sgg::_python_gpu_w2s_loss", {from(loss), from(v), from(u), from(weak), from(mid), from(coefs)});
}

void w2s_backward_cuda(Tensor grad_v, OptTensor grad_mid, Tensor grad, Tensor v, Tensor u, OptTensor weak,
                       OptTensor mid, Tensor coefs) {
  const torch::stable::accelerator::DeviceGuard guard(v.get_device_index());
  call_python_gpu<8>("sgg::_python_gpu_w2s_loss_backward", {from(grad_v), from(grad_mid), from(grad), from(v),
                                                            from(u), from(weak), from(mid), from(coefs)});
}

// sgg::_launch on CUDA tensors: this library's CUDA C++ kernel, whatever backend is selected.
void launch_cuda(std::string backend, Tensor out, OptTensor x, Tensor cond, OptTensor uncond, OptTensor weak,
                 Tensor weights, OptTensor step, OptTensor noise) {
  SGG_CHECK(backend == "cuda", "sgg._launch: backend '", backend, "' does not run CUDA tensors; use cuda");
  const torch::stable::accelerator::DeviceGuard guard(cond.get_device_index());
  run_cuda_cpp(out, x, cond, uncond, weak, weights, step, noise);
}

// Tells the core library that CUDA kernels exist (the default backend becomes cuda).
const bool kNoted = (sgg_note_cuda_library_loaded(), true);

}  // namespace
}  // namespace sgg

STABLE_TORCH_LIBRARY_IMPL(sgg, CUDA, m) {
  sgg::impl_with_twin(m, "guide", TORCH_BOX(&sgg::guide_kernel<&sgg::run_cuda>));
  sgg::impl_with_twin(m, "guided_step", TORCH_BOX(&sgg::guided_step_kernel<&sgg::run_cuda>));
  sgg::impl_with_twin(m, "guided_step_", TORCH_BOX(&sgg::guided_step__kernel<&sgg::run_cuda>));
  m.impl("_launch", TORCH_BOX(&sgg::launch_cuda));
  sgg::impl_with_twin(m, "w2s_loss", TORCH_BOX(&sgg::w2s_loss_kernel<&sgg::w2s_forward_cuda>));
  sgg::impl_with_twin(m, "w2s_loss_backward",
                      TORCH_BOX(&sgg::w2s_loss_backward_kernel<&sgg::w2s_backward_cuda>));
}
