// Kernels of sgg.w2s_loss and sgg.w2s_loss_backward for each dispatch key (autograd and autocast
// are registered in sgg_kernels/w2s_loss.py). CPU runs the C++ kernel; CUDA has no C++ kernel for a
// reduction-type loss and hands the validated call to Triton (or the torch backend) through
// sgg::_python_gpu_w2s_loss{,_backward}; Meta serves torch.compile.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "checks.h"
#include "cpu/w2s_loss_cpu.h"

namespace sgg {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

at::ScalarType accumulation_type(const Tensor& v) { return v.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

OptTensor contiguous(const OptTensor& t) { return t ? OptTensor(t->contiguous()) : std::nullopt; }

Tensor new_loss(const Tensor& v) { return at::empty_symint({v.sym_size(0)}, v.options().dtype(accumulation_type(v))); }

std::pair<Tensor, Tensor> new_grads(const Tensor& v, const OptTensor& mid) {
  const auto contiguous_like = [&] { return at::empty_like(v, at::MemoryFormat::Contiguous); };
  return {contiguous_like(), mid ? contiguous_like() : at::empty({0}, v.options())};
}

// The Python kernel `import sgg_kernels` registers for `name` (sgg::_python_gpu_w2s_loss...).
c10::OperatorHandle python_gpu_op(const char* name) {
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
  TORCH_CHECK(op.hasKernelForDispatchKey(c10::DispatchKey::CUDA), "sgg.w2s_loss: on CUDA tensors it runs the ",
              "Triton kernel, which `import sgg_kernels` registers; this process has not imported it");
  return op;
}

const auto kCudaKey = c10::DispatchKeySet(c10::DispatchKey::CUDA);

Tensor w2s_loss(const Tensor& v, const Tensor& u, const OptTensor& weak, const OptTensor& mid, const Tensor& coefs) {
  check_w2s_loss_args("w2s_loss", v, u, weak, mid, coefs, nullptr);
  Tensor loss = new_loss(v);
  if (v.is_cpu()) {
    cpu::w2s_loss_forward_cpu(loss, v.contiguous(), u.contiguous(), contiguous(weak), contiguous(mid), coefs);
  } else {
    static const auto op = python_gpu_op("sgg::_python_gpu_w2s_loss")
                               .typed<void(const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                                           const OptTensor&, const Tensor&)>();
    op.redispatch(kCudaKey, loss, v.contiguous(), u.contiguous(), contiguous(weak), contiguous(mid), coefs);
  }
  return loss;
}

std::tuple<Tensor, Tensor> w2s_loss_backward(const Tensor& grad, const Tensor& v, const Tensor& u,
                                             const OptTensor& weak, const OptTensor& mid, const Tensor& coefs) {
  check_w2s_loss_args("w2s_loss_backward", v, u, weak, mid, coefs, &grad);
  auto [grad_v, grad_mid] = new_grads(v, mid);
  const OptTensor grad_mid_out = mid ? OptTensor(grad_mid) : std::nullopt;
  const Tensor g = grad.to(accumulation_type(v)).contiguous();
  if (v.is_cpu()) {
    cpu::w2s_loss_backward_cpu(grad_v, grad_mid_out, g, v.contiguous(), u.contiguous(), contiguous(weak),
                               contiguous(mid), coefs);
  } else {
    static const auto op = python_gpu_op("sgg::_python_gpu_w2s_loss_backward")
                               .typed<void(const Tensor&, const OptTensor&, const Tensor&, const Tensor&,
                                           const Tensor&, const OptTensor&, const OptTensor&, const Tensor&)>();
    op.redispatch(kCudaKey, grad_v, grad_mid_out, g, v.contiguous(), u.contiguous(), contiguous(weak),
                  contiguous(mid), coefs);
  }
  return {grad_v, grad_mid};
}

Tensor w2s_loss_meta(const Tensor& v, const Tensor& u, const OptTensor& weak, const OptTensor& mid,
                     const Tensor& coefs) {
  check_w2s_loss_args("w2s_loss", v, u, weak, mid, coefs, nullptr);
  return new_loss(v);
}

std::tuple<Tensor, Tensor> w2s_loss_backward_meta(const Tensor& grad, const Tensor& v, const Tensor& u,
                                                  const OptTensor& weak, const OptTensor& mid, const Tensor& coefs) {
  check_w2s_loss_args("w2s_loss_backward", v, u, weak, mid, coefs, &grad);
  return new_grads(v, mid);
}

}  // namespace
}  // namespace sgg

TORCH_LIBRARY_IMPL(sgg, CPU, m) {
  m.impl("w2s_loss", &sgg::w2s_loss);
  m.impl("w2s_loss_backward", &sgg::w2s_loss_backward);
}

TORCH_LIBRARY_IMPL(sgg, CUDA, m) {
  m.impl("w2s_loss", &sgg::w2s_loss);
  m.impl("w2s_loss_backward", &sgg::w2s_loss_backward);
}

TORCH_LIBRARY_IMPL(sgg, Meta, m) {
  m.impl("w2s_loss", &sgg::w2s_loss_meta);
  m.impl("w2s_loss_backward", &sgg::w2s_loss_backward_meta);
}

// Direct calls of the CPU kernels (tests and benchmarks); operands must be contiguous.
TORCH_LIBRARY_IMPL(sgg, CompositeImplicitAutograd, m) {
  m.impl("_w2s_loss_cpu", &sgg::cpu::w2s_loss_forward_cpu);
  m.impl("_w2s_loss_backward_cpu", &sgg::cpu::w2s_loss_backward_cpu);
}
