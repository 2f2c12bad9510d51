// Autograd kernels of the public ops for a process that loads only the library (a C++ program,
// TorchScript, an AOTInductor package). `import sgg_kernels` replaces them with the autograd formulas
// (sgg_kernels/ops.py, sgg_kernels/w2s_loss.py). Without them, torch's fallback would run the op, warn
// only at backward() and leave the gradient None. The stable ABI can neither ask whether a tensor
// requires grad nor run below autograd, so each kernel here
//  - refuses an input that needs a graph, naming it and the fix, before anything is written;
//  - runs the op's argument checks, whose messages a dispatcher call would only print;
//  - then calls the op's twin (twins.h), which the dispatcher runs below autograd.
// What that costs a call: docs/design.md, "Dispatch keys: who does what" (benchmarks/call_overhead.py).
#include <torch/csrc/inductor/aoti_torch/c/shim.h>

#include <array>
#include <initializer_list>
#include <utility>

#include "checks.h"
#include "twins.h"

namespace sgg {
namespace {

using torch::stable::detail::from;
using torch::stable::detail::to;

template <size_t N>
void call(const char* op, std::array<StableIValue, N>& stack) {
  SGG_CHECK(torch_call_dispatcher(op, "", stack.data(), TORCH_ABI_VERSION) == AOTI_TORCH_SUCCESS, "sgg: ", op,
            " failed; its error is printed above");
}

// The op's twin, below autograd.
template <size_t N>
void call_twin(const char* op, std::array<StableIValue, N>& stack) {
  call(("sgg::" + twin_of(op)).c_str(), stack);
}

// An alias of a tensor that requires grad gets a grad_fn, so it is not a leaf, exactly when grad mode is on.
bool needs_graph(const Tensor& t) {
  std::array<StableIValue, 1> stack{from(t)};
  call("aten::alias", stack);
  call("aten::is_leaf", stack);
  return !to<bool>(stack[0]);
}

using Named = std::pair<const char*, const OptTensor>;

void refuse_graph(const char* op, std::initializer_list<Named> inputs) {
  if (!aoti_torch_grad_mode_is_enabled()) return;
  for (const auto& [name, t] : inputs)
    SGG_CHECK(!t || !needs_graph(*t), "sgg.", op, ": ", name, " requires grad, but this process has not imported ",
              "sgg_kernels, which registers the ops' autograd; import it (Python), or run under torch.no_grad() ",
              "or an InferenceMode guard (C++)");
}

Tensor guide(Tensor cond, OptTensor uncond, OptTensor weak, Tensor weights) {
  refuse_graph("guide", {{"cond", cond}, {"uncond", uncond}, {"weak", weak}, {"weights", weights}});
  check_guidance_args("guide", nullptr, cond, uncond, weak, weights, nullptr, std::nullopt, false);
  std::array<StableIValue, 4> stack{from(cond), from(uncond), from(weak), from(weights)};
  call_twin("guide", stack);
  return to<Tensor>(stack[0]);
}

// guided_step and guided_step_ (in_place: x is written) take the same arguments.
std::array<StableIValue, 7> checked_step(const char* op, bool in_place, const Tensor& x, const Tensor& cond,
                                         const OptTensor& uncond, const OptTensor& weak, const Tensor& weights,
                                         const Tensor& step, const OptTensor& noise) {
  refuse_graph(op, {{"x", x}, {"cond", cond}, {"uncond", uncond}, {"weak", weak}, {"weights", weights},
                    {"step", step}, {"noise", noise}});
  check_guidance_args(op, &x, cond, uncond, weak, weights, &step, noise, in_place);
  return {from(x), from(cond), from(uncond), from(weak), from(weights), from(step), from(noise)};
}

Tensor guided_step(Tensor x, Tensor cond, OptTensor uncond, OptTensor weak, Tensor weights, Tensor step,
                   OptTensor noise) {
  auto stack = checked_step("guided_step", false, x, cond, uncond, weak, weights, step, noise);
  call_twin("guided_step", stack);
  return to<Tensor>(stack[0]);
}

void guided_step_(Tensor x, Tensor cond, OptTensor uncond, OptTensor weak, Tensor weights, Tensor step,
                  OptTensor noise) {
  auto stack = checked_step("guided_step_", true, x, cond, uncond, weak, weights, step, noise);
  call_twin("guided_step_", stack);
}

Tensor w2s_loss(Tensor v, Tensor u, OptTensor weak, OptTensor mid, Tensor coefs) {
  refuse_graph("w2s_loss", {{"v", v}, {"u", u}, {"weak", weak}, {"mid", mid}, {"coefs", coefs}});
  check_w2s_loss_args("w2s_loss", v, u, weak, mid, coefs, nullptr);
  std::array<StableIValue, 5> stack{from(v), from(u), from(weak), from(mid), from(coefs)};
  call_twin("w2s_loss", stack);
  return to<Tensor>(stack[0]);
}

std::tuple<Tensor, Tensor> w2s_loss_backward(Tensor grad, Tensor v, Tensor u, OptTensor weak, OptTensor mid,
                                             Tensor coefs) {
  refuse_graph("w2s_loss_backward",
               {{"grad", grad}, {"v", v}, {"u", u}, {"weak", weak}, {"mid", mid}, {"coefs", coefs}});
  check_w2s_loss_args("w2s_loss_backward", v, u, weak, mid, coefs, &grad);
  std::array<StableIValue, 6> stack{from(grad), from(v), from(u), from(weak), from(mid), from(coefs)};
  call_twin("w2s_loss_backward", stack);
  return {to<Tensor>(stack[0]), to<Tensor>(stack[1])};
}

}  // namespace
}  // namespace sgg

STABLE_TORCH_LIBRARY_IMPL(sgg, Autograd, m) {
  m.impl("guide", TORCH_BOX(&sgg::guide));
  m.impl("guided_step", TORCH_BOX(&sgg::guided_step));
  m.impl("guided_step_", TORCH_BOX(&sgg::guided_step_));
  m.impl("w2s_loss", TORCH_BOX(&sgg::w2s_loss));
  m.impl("w2s_loss_backward", TORCH_BOX(&sgg::w2s_loss_backward));
}
