// Process-wide settings behind the internal ops _gpu_backend, _set_gpu_backend, _cuda_built,
// _cpu_capability and _set_cpu_capability (sgg_kernels/backends.py wraps them).
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "cpu/guidance_cpu.h"
#include "runtime_settings.h"

namespace sgg {
namespace {

const char* const kBackendNames[] = {"cuda", "triton", "torch"};
std::atomic<int> g_selected{-1};  // -1: none selected, use $SGG_BACKEND or the default

GpuBackend parse_backend(const std::string& name, const char* source) {
  for (int b = 0; b < 3; ++b)
    if (name == kBackendNames[b]) return static_cast<GpuBackend>(b);
  TORCH_CHECK_VALUE(false, source, "'", name, "' is not an sgg backend; expected one of cuda, triton, torch");
}

const char* const kCapabilityNames[] = {"default", "avx2", "avx512"};

}  // namespace

bool cuda_built() {
#ifdef SGG_WITH_CUDA
  return true;
#else
  return false;
#endif
}

GpuBackend gpu_backend() {
  const int selected = g_selected.load(std::memory_order_relaxed);
  if (selected >= 0) return static_cast<GpuBackend>(selected);
  // Read on every call (a getenv, ~50 ns) so that a changed environment takes effect, as documented.
  if (const char* env = std::getenv("SGG_BACKEND"); env && *env) return parse_backend(env, "SGG_BACKEND=");
  return cuda_built() ? GpuBackend::kCuda : GpuBackend::kTriton;
}

const char* gpu_backend_name(GpuBackend b) { return kBackendNames[static_cast<int>(b)]; }

namespace {

std::string get_gpu_backend() { return gpu_backend_name(gpu_backend()); }

void set_gpu_backend(std::optional<std::string> name) {
  g_selected.store(name ? static_cast<int>(parse_backend(*name, "")) : -1, std::memory_order_relaxed);
}

std::string get_cpu_capability() { return kCapabilityNames[static_cast<int>(cpu::capability())]; }

void set_cpu_capability(std::string name) {
  for (int c = 0; c < 3; ++c)
    if (name == kCapabilityNames[c]) return cpu::set_capability(static_cast<cpu::Capability>(c));
  TORCH_CHECK_VALUE(false, "sgg: unknown CPU capability '", name, "'; expected default, avx2 or avx512");
}

}  // namespace
}  // namespace sgg

// No tensor arguments, so no dispatch key to choose by: one kernel for every key.
TORCH_LIBRARY_IMPL(sgg, CompositeImplicitAutograd, m) {
  m.impl("_gpu_backend", &sgg::get_gpu_backend);
  m.impl("_set_gpu_backend", &sgg::set_gpu_backend);
  m.impl("_cuda_built", &sgg::cuda_built);
  m.impl("_cpu_capability", &sgg::get_cpu_capability);
  m.impl("_set_cpu_capability", &sgg::set_cpu_capability);
}
