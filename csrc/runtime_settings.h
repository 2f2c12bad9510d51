// Which kernels run a CUDA call (see runtime_settings.cpp).
#pragma once

namespace sgg {

// The GPU backend: the CUDA C++ kernels of this library, or a Python one reached through the
// _python_gpu_* ops (Triton, or the pure-PyTorch reference).
enum class GpuBackend : int { kCuda = 0, kTriton = 1, kTorch = 2 };

GpuBackend gpu_backend();  // set_gpu_backend's choice, else $SGG_BACKEND, else cuda if built, else triton
const char* gpu_backend_name(GpuBackend b);
bool cuda_built();

}  // namespace sgg
