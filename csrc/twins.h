// Each public op with autograd has a twin, sgg::_<op>_no_autograd: the same schema and device kernels,
// and no autograd kernel, so the dispatcher runs it below autograd. The library's own autograd kernels
// (library_only_autograd.cpp) call it once they have refused inputs that need a graph.
#pragma once
#include <torch/csrc/stable/library.h>

#include <string>

namespace sgg {

inline std::string twin_of(const char* op) { return std::string("_") + op + "_no_autograd"; }

// Defines the op `name` with `rest` (its schema after the name), and its twin with the same schema.
inline void def_with_twin(torch::stable::detail::StableLibrary& m, const char* name, const char* rest) {
  m.def((name + std::string(rest)).c_str());
  m.def((twin_of(name) + rest).c_str());
}

// Registers `kernel` for the op `name` and for its twin, at the library block's dispatch key.
inline void impl_with_twin(torch::stable::detail::StableLibrary& m, const char* name,
                           void (*kernel)(StableIValue*, uint64_t, uint64_t)) {
  m.impl(name, kernel);
  m.impl(twin_of(name).c_str(), kernel);
}

}  // namespace sgg
