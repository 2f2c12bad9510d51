// Process-wide settings behind the internal ops _gpu_backend, _set_gpu_backend, _cuda_built,
// _cpu_capability and _set_cpu_capability (sgg_kernels/backends.py wraps them).
#include "runtime_settings.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "cpu/guidance_cpu.h"

namespace sgg {
namespace {

const char* const kBackendNames[] = {"cuda", "triton", "torch"};
std::atomic<int> g_selected{-1};  // -1: none selected, use $SGG_BACKEND or the default
std::atomic<bool> g_cuda_loaded{false};

int parse_backend(const std::string& name, const char* source) {
  for (int b = 0; b < 3; ++b)
    if (name == kBackendNames[b]) return b;
  fail(source, "'", name, "' is not an sgg backend; expected one of cuda, triton, torch");
}

const char* const kCapabilityNames[] = {"default", "avx2", "avx512"};

std::string get_gpu_backend() { return gpu_backend_name(gpu_backend()); }

void set_gpu_backend(std::optional<std::string> name) {
  g_selected.store(name ? parse_backend(*name, "") : -1, std::memory_order_relaxed);
}

bool cuda_built() { return g_cuda_loaded.load(std::memory_order_relaxed); }

std::string get_cpu_capability() { return kCapabilityNames[static_cast<int>(cpu::capability())]; }

void set_cpu_capability(std::string name) {
  for (int c = 0; c < 3; ++c)
    if (name == kCapabilityNames[c]) return cpu::set_capability(static_cast<cpu::Capability>(c));
  fail("sgg: unknown CPU capability '", name, "'; expected default, avx2 or avx512");
}

}  // namespace

const char* gpu_backend_name(GpuBackend b) { return kBackendNames[static_cast<int>(b)]; }

}  // namespace sgg

extern "C" int sgg_gpu_backend() {
  const int selected = sgg::g_selected.load(std::memory_order_relaxed);
  if (selected >= 0) return selected;
  // Read on every call (a getenv, ~50 ns) so that a changed environment takes effect, as documented.
  if (const char* env = std::getenv("SGG_BACKEND"); env && *env) return sgg::parse_backend(env, "SGG_BACKEND=");
  return sgg::cuda_built() ? 0 : 1;
}

extern "C" void sgg_note_cuda_library_loaded() { sgg::g_cuda_loaded.store(true, std::memory_order_relaxed); }

// No tensor arguments, so no dispatch key to choose by: one kernel for every key.
STABLE_TORCH_LIBRARY_IMPL(sgg, CompositeImplicitAutograd, m) {
  m.impl("_gpu_backend", TORCH_BOX(&sgg::get_gpu_backend));
  m.impl("_set_gpu_backend", TORCH_BOX(&sgg::set_gpu_backend));
  m.impl("_cuda_built", TORCH_BOX(&sgg::cuda_built));
  m.impl("_cpu_capability", TORCH_BOX(&sgg::get_cpu_capability));
  m.impl("_set_cpu_capability", TORCH_BOX(&sgg::set_cpu_capability));
}
