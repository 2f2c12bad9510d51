// The argument checks of every sgg op, shared by the CPU, CUDA and Meta kernels: the Meta kernels
// are what torch.compile and torch.export trace with, so compiled code gets the same messages.
// Each check names the argument and the problem, runs before anything is allocated or written,
// reads no tensor values (never synchronises) and accepts symbolic sizes.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace sgg {

// sgg.guide (x and step absent), sgg.guided_step and sgg.guided_step_ (in_place: x is written).
void check_guidance_args(const char* op, const at::Tensor* x, const at::Tensor& cond,
                         const std::optional<at::Tensor>& uncond, const std::optional<at::Tensor>& weak,
                         const at::Tensor& weights, const at::Tensor* step, bool in_place);

// sgg.w2s_loss and sgg.w2s_loss_backward (grad given).
void check_w2s_loss_args(const char* op, const at::Tensor& v, const at::Tensor& u,
                         const std::optional<at::Tensor>& weak, const std::optional<at::Tensor>& mid,
                         const at::Tensor& coefs, const at::Tensor* grad);

}  // namespace sgg
