// Python entry points of the compiled launchers. The sgg op schemas are defined once, in
// sgg_kernels/ops.py, which registers these launchers for the CPU (and CUDA) dispatch keys.
#include <torch/extension.h>

#include "cpu/guidance_cpu.h"

namespace {

const char* const kCapabilityNames[] = {"default", "avx2", "avx512"};

std::string cpu_capability() { return kCapabilityNames[static_cast<int>(sgg::cpu::capability())]; }

void set_cpu_capability(const std::string& name) {
  for (int c = 0; c < 3; ++c)
    if (name == kCapabilityNames[c]) return sgg::cpu::set_capability(static_cast<sgg::cpu::Capability>(c));
  TORCH_CHECK(false, "sgg: unknown CPU capability '", name, "'; expected default, avx2 or avx512");
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sgg_kernels compiled launchers";
  m.def("guided_step_cpu", &sgg::cpu::guided_step_cpu, "out = step_a*x + step_b*guide(...) on CPU",
        py::arg("out"), py::arg("x"), py::arg("cond"), py::arg("uncond"), py::arg("weak"), py::arg("weights"),
        py::arg("step"), py::call_guard<py::gil_scoped_release>());  // other Python threads run meanwhile
  m.def("cpu_capability", &cpu_capability, "SIMD level used by the dense CPU kernel");
  m.def("set_cpu_capability", &set_cpu_capability, "force a SIMD level (default, avx2, avx512)");
}
