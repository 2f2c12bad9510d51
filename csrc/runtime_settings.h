// Process-wide settings the core library keeps and the CUDA library reads (it links the core library,
// so both see this one copy): which kernels run a CUDA call, and whether the CUDA library is loaded.
#pragma once

// C linkage: the CUDA library finds these in the core library by name.
extern "C" {
// 0 cuda (this project's CUDA C++ kernels), 1 triton, 2 torch: set_gpu_backend's choice, else
// $SGG_BACKEND, else cuda when the CUDA library is loaded, else triton.
int sgg_gpu_backend();
// Called once by the CUDA library as it loads.
void sgg_note_cuda_library_loaded();
}

namespace sgg {
enum class GpuBackend : int { kCuda = 0, kTriton = 1, kTorch = 2 };
inline GpuBackend gpu_backend() { return static_cast<GpuBackend>(sgg_gpu_backend()); }
const char* gpu_backend_name(GpuBackend b);
}  // namespace sgg
