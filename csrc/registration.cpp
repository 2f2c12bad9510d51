// The sgg operator library: every schema, defined once, here. The core library (this file, checks,
// the CPU kernels) loads on any torch from the floor on, CPU-only builds included; the CUDA library
// (csrc/cuda) adds the CUDA kernels. Both use only LibTorch's stable ABI, so one binary serves every
// torch release from the floor on (docs/ops.md, "Installing, ABI and torch versions"), and C++
// programs, TorchScript and AOTInductor packages load them without Python.
//
// What the stable ABI cannot express is registered by `import sgg_kernels`: autograd
// (sgg_kernels/ops.py, sgg_kernels/w2s_loss.py), guided_step_'s version bump, and the traced (fake)
// kernels with symbolic sizes (sgg_kernels/fake_kernels.py). Until then, library_only_autograd.cpp
// refuses the calls that need a graph.
#include "overlap.h"
#include "stable_tensor.h"
#include "twins.h"

// The public ops are defined with their twins (twins.h), for processes that load only the library.
STABLE_TORCH_LIBRARY(sgg, m) {
  // guide = cond + w[0] * (cond - uncond) + w[1] * (cond - weak); weights float32 [2] or [B, 2].
  sgg::def_with_twin(m, "guide", "(Tensor cond, Tensor? uncond, Tensor? weak, Tensor weights) -> Tensor");
  // x_next = step[0] * x + step[1] * guide(...); step float32 [2] or [B, 2]. With noise (a stochastic
  // step), x_next = step[0] * x + step[1] * guide(...) + step[2] * noise; step [3] or [B, 3]. noise comes
  // last with a default, so calls, TorchScript modules and AOTInductor packages made without it still run.
  sgg::def_with_twin(m, "guided_step", "(Tensor x, Tensor cond, Tensor? uncond, Tensor? weak, Tensor weights, "
                     "Tensor step, Tensor? noise=None) -> Tensor");
  // Returns nothing: torch.compile functionalizes mutating custom ops only when they return no alias.
  sgg::def_with_twin(m, "guided_step_", "(Tensor(a!) x, Tensor cond, Tensor? uncond, Tensor? weak, "
                     "Tensor weights, Tensor step, Tensor? noise=None) -> ()");
  // Per-sample training losses [B]; coefs = (lam, rho_vm, rho_mu), float32 [3] or [B, 3].
  sgg::def_with_twin(m, "w2s_loss", "(Tensor v, Tensor u, Tensor? weak, Tensor? mid, Tensor coefs) -> Tensor");
  // grad_mid comes back with shape [0] when mid is absent: a schema cannot return an optional tensor.
  sgg::def_with_twin(m, "w2s_loss_backward",
                     "(Tensor grad, Tensor v, Tensor u, Tensor? weak, Tensor? mid, Tensor coefs) -> (Tensor, Tensor)");

  // Internal. Direct calls of one compiled backend (no argument checks beyond memory safety), for
  // tests and benchmarks: backend is "cpu" (CPU tensors) or "cuda" (CUDA tensors).
  m.def("_launch(str backend, Tensor(a!) out, Tensor? x, Tensor cond, Tensor? uncond, Tensor? weak, "
        "Tensor weights, Tensor? step, Tensor? noise=None) -> ()");
  m.def("_w2s_loss_cpu(Tensor(a!) loss, Tensor v, Tensor u, Tensor? weak, Tensor? mid, Tensor coefs) -> ()");
  m.def("_w2s_loss_backward_cpu(Tensor(a!) grad_v, Tensor(b!)? grad_mid, Tensor grad, Tensor v, Tensor u, "
        "Tensor? weak, Tensor? mid, Tensor coefs) -> ()");
  // Internal. The CUDA kernels hand validated calls to these when the selected GPU backend is a Python
  // one (triton or torch); `import sgg_kernels` registers their CUDA kernels.
  m.def("_python_gpu_guided_step(Tensor(a!) out, Tensor? x, Tensor cond, Tensor? uncond, Tensor? weak, "
        "Tensor weights, Tensor? step, Tensor? noise) -> ()");
  m.def("_python_gpu_w2s_loss(Tensor(a!) loss, Tensor v, Tensor u, Tensor? weak, Tensor? mid, Tensor coefs) -> ()");
  m.def("_python_gpu_w2s_loss_backward(Tensor(a!) grad_v, Tensor(b!)? grad_mid, Tensor grad, Tensor v, Tensor u, "
        "Tensor? weak, Tensor? mid, Tensor coefs) -> ()");
  // Internal. Process-wide settings (runtime_settings.cpp).
  m.def("_gpu_backend() -> str");
  m.def("_set_gpu_backend(str? name) -> ()");
  m.def("_cuda_built() -> bool");
  m.def("_cpu_capability() -> str");
  m.def("_set_cpu_capability(str name) -> ()");
  // Internal. The overlap tests of overlap.cpp on plain layouts (sizes, strides and offsets in elements),
  // for the traced checks of sgg_kernels/fake_kernels.py. _overlap: 0 none, 1 same, 2 partial, 3 unknown.
  m.def("_self_overlaps(int[] sizes, int[] strides) -> bool");
  m.def("_overlap(int[] w_sizes, int[] w_strides, int w_offset, int w_itemsize, int[] r_sizes, int[] r_strides, "
        "int r_offset, int r_itemsize) -> int");
}

namespace sgg {
namespace {

bool self_overlaps(std::vector<int64_t> sizes, std::vector<int64_t> strides) {
  return may_overlap_itself({std::move(sizes), std::move(strides)});
}

int64_t overlap_status(std::vector<int64_t> w_sizes, std::vector<int64_t> w_strides, int64_t w_offset,
                       int64_t w_itemsize, std::vector<int64_t> r_sizes, std::vector<int64_t> r_strides,
                       int64_t r_offset, int64_t r_itemsize) {
  return static_cast<int64_t>(overlap({std::move(w_sizes), std::move(w_strides), w_offset, w_itemsize},
                                      {std::move(r_sizes), std::move(r_strides), r_offset, r_itemsize}));
}

}  // namespace
}  // namespace sgg

STABLE_TORCH_LIBRARY_IMPL(sgg, CompositeImplicitAutograd, m) {
  m.impl("_self_overlaps", TORCH_BOX(&sgg::self_overlaps));
  m.impl("_overlap", TORCH_BOX(&sgg::overlap_status));
}
