// Dtype -> kernel instantiation and the SM count, for the launcher declared in guidance_cuda.h.
#include <array>
#include <atomic>

#include "guidance_cuda.h"
#include "guidance_kernel.cuh"

namespace sgg::cuda {
namespace {

// Queried once per device (a driver call costs microseconds; each launch needs it).
int sm_count(int device) {
  static std::array<std::atomic<int>, 64> cache{};
  if (device < 0 || device >= int(cache.size())) {
    int n = 0;
    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device);
    return n;
  }
  int n = cache[device].load(std::memory_order_relaxed);
  if (n == 0) {
    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device);
    cache[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

}  // namespace

int launch_guidance(const GuidanceParams& p, Dtype dtype, int device, void* stream) {
  if (p.batch * p.per_sample == 0) return cudaSuccess;
  const Launch launch{sm_count(device), static_cast<cudaStream_t>(stream)};
  switch (dtype) {
    case Dtype::kFloat: launch_guidance<float>(p, launch); break;
    case Dtype::kDouble: launch_guidance<double>(p, launch); break;
    case Dtype::kHalf: launch_guidance<__half>(p, launch); break;
    case Dtype::kBFloat16: launch_guidance<__nv_bfloat16>(p, launch); break;
  }
  return cudaGetLastError();
}

const char* error_string(int error) { return cudaGetErrorString(static_cast<cudaError_t>(error)); }

}  // namespace sgg::cuda
