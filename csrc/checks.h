// The argument checks of every sgg op, run by the CPU and CUDA kernels before anything is allocated or
// written. Each names the argument and the problem and reads no tensor values (never synchronises).
// Traced calls (torch.compile, torch.export: fake tensors, symbolic sizes) are checked by
// sgg_kernels/fake_kernels.py with the same messages; tests/test_bad_input.py holds both to them.
#pragma once
#include "stable_tensor.h"

namespace sgg {

// sgg.guide (x, step and noise absent), sgg.guided_step and sgg.guided_step_ (in_place: x is written);
// with noise (a stochastic step), step has 3 columns.
void check_guidance_args(const char* op, const Tensor* x, const Tensor& cond, const OptTensor& uncond,
                         const OptTensor& weak, const Tensor& weights, const Tensor* step, const OptTensor& noise,
                         bool in_place);

// sgg.w2s_loss and sgg.w2s_loss_backward (grad given).
void check_w2s_loss_args(const char* op, const Tensor& v, const Tensor& u, const OptTensor& weak,
                         const OptTensor& mid, const Tensor& coefs, const Tensor* grad);

}  // namespace sgg
