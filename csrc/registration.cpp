// The sgg operator library: every schema, defined once, here. Kernels are registered per dispatch key
// in guidance_ops.cpp and w2s_loss_ops.cpp; Python adds autograd for guide/guided_step/w2s_loss and
// the Triton backend (sgg_kernels/ops.py, sgg_kernels/w2s_loss.py); without that import, the Autograd
// kernels at the end of this file refuse calls that need a graph. This library needs only libtorch,
// so C++ programs, TorchScript and AOTInductor packages can load it without Python.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string>

TORCH_LIBRARY(sgg, m) {
  // guide = cond + w[0] * (cond - uncond) + w[1] * (cond - weak); weights float32 [2] or [B, 2].
  m.def("guide(Tensor cond, Tensor? uncond, Tensor? weak, Tensor weights) -> Tensor");
  // x_next = step[0] * x + step[1] * guide(...); step float32 [2] or [B, 2].
  m.def("guided_step(Tensor x, Tensor cond, Tensor? uncond, Tensor? weak, Tensor weights, Tensor step) -> Tensor");
  // Returns nothing: torch.compile functionalizes mutating custom ops only when they return no alias.
  m.def("guided_step_(Tensor(a!) x, Tensor cond, Tensor? uncond, Tensor? weak, Tensor weights, Tensor step) -> ()");
  // Per-sample training losses [B]; coefs = (lam, rho_vm, rho_mu), float32 [3] or [B, 3].
  m.def("w2s_loss(Tensor v, Tensor u, Tensor? weak, Tensor? mid, Tensor coefs) -> Tensor");
  // grad_mid comes back with shape [0] when mid is absent: a schema cannot return an optional tensor.
  m.def("w2s_loss_backward(Tensor grad, Tensor v, Tensor u, Tensor? weak, Tensor? mid, Tensor coefs)"
        " -> (Tensor, Tensor)");

  // Internal. Direct calls of one compiled backend (no argument checks beyond memory safety), for
  // tests and benchmarks: backend is "cpu" or "cuda".
  m.def("_launch(str backend, Tensor(a!) out, Tensor? x, Tensor cond, Tensor? uncond, Tensor? weak, "
        "Tensor weights, Tensor? step) -> ()");
  m.def("_w2s_loss_cpu(Tensor(a!) loss, Tensor v, Tensor u, Tensor? weak, Tensor? mid, Tensor coefs) -> ()");
  m.def("_w2s_loss_backward_cpu(Tensor(a!) grad_v, Tensor(b!)? grad_mid, Tensor grad, Tensor v, Tensor u, "
        "Tensor? weak, Tensor? mid, Tensor coefs) -> ()");
  // Internal. The CUDA kernels hand validated calls to these when the selected GPU backend is a Python
  // one (triton or torch); `import sgg_kernels` registers their CUDA kernels.
  m.def("_python_gpu_guided_step(Tensor(a!) out, Tensor? x, Tensor cond, Tensor? uncond, Tensor? weak, "
        "Tensor weights, Tensor? step) -> ()");
  m.def("_python_gpu_w2s_loss(Tensor(a!) loss, Tensor v, Tensor u, Tensor? weak, Tensor? mid, Tensor coefs) -> ()");
  m.def("_python_gpu_w2s_loss_backward(Tensor(a!) grad_v, Tensor(b!)? grad_mid, Tensor grad, Tensor v, Tensor u, "
        "Tensor? weak, Tensor? mid, Tensor coefs) -> ()");
  // Internal. Process-wide settings (runtime_settings.cpp).
  m.def("_gpu_backend() -> str");
  m.def("_set_gpu_backend(str? name) -> ()");
  m.def("_cuda_built() -> bool");
  m.def("_cpu_capability() -> str");
  m.def("_set_cpu_capability(str name) -> ()");
}

namespace sgg {
namespace {

// Autograd for guide, guided_step, w2s_loss and w2s_loss_backward is registered by `import sgg_kernels`
// (a later registration for the same key, so it replaces this one). A process that only loads the
// library gets this kernel instead: calls that need no graph run as usual, and a call that would need
// one is refused, where the dispatcher's fallback would give a warning and a silent None gradient.
void autograd_needs_python(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  std::string name = op.schema().name();  // sgg::guide, written sgg.guide as in every other message
  name.replace(name.find("::"), 2, ".");
  const auto& arguments = op.schema().arguments();
  const auto first = stack->size() - arguments.size();
  for (size_t i = 0; i < arguments.size(); ++i) {
    const c10::IValue& value = (*stack)[first + i];
    if (!value.isTensor()) continue;  // an absent optional tensor is None
    const at::Tensor& t = value.toTensor();
    const bool needs_graph = (t.requires_grad() && at::GradMode::is_enabled()) || t._fw_grad(/*level=*/0).defined();
    TORCH_CHECK(!needs_graph, name, ": ", arguments[i].name(), " needs autograd, which the ",
                "sgg_kernels Python package registers; this process only loaded the operator library. Run "
                "`import sgg_kernels` before the call, or call it under torch.no_grad() for no gradient");
  }
  at::AutoDispatchBelowADInplaceOrView guard;
  op.redispatchBoxed(ks & c10::after_ADInplaceOrView_keyset, stack);
}

}  // namespace
}  // namespace sgg

TORCH_LIBRARY_IMPL(sgg, Autograd, m) {
  for (const char* name : {"guide", "guided_step", "w2s_loss", "w2s_loss_backward"})
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&sgg::autograd_needs_python>());
}
