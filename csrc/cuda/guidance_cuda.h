// The CUDA launcher, torch-free: the host-compiled kernels (cuda_ops.cpp) turn tensors into
// GuidanceParams and call it; nvcc compiles it with no torch header.
#pragma once
#include "../guidance_params.h"

namespace sgg::cuda {

enum class Dtype : int { kFloat, kDouble, kHalf, kBFloat16 };

// Launches the guidance pass for p (any size, an empty one launches nothing) on `stream` of `device`,
// with no allocation or synchronisation, so it can be captured in a CUDA graph. Returns the launch's
// cudaError_t (0 on success).
int launch_guidance(const GuidanceParams& p, Dtype dtype, int device, void* stream);

const char* error_string(int error);

}  // namespace sgg::cuda
