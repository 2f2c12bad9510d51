#pragma once
#include <torch/extension.h>

namespace sgg::cpu {

// Adds w2s_loss_forward_cpu and w2s_loss_backward_cpu (csrc/cpu/w2s_loss_cpu.cpp) to the module.
void register_w2s_loss(pybind11::module& m);

}  // namespace sgg::cpu
