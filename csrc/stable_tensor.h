// What every file of the operator library takes from LibTorch's stable ABI (torch/csrc/stable,
// torch/headeronly), plus the library's error helper and the names its messages use.
//
// Errors: a kernel reports bad input by throwing std::runtime_error, which torch raises in Python as
// RuntimeError (the stable ABI carries no other exception type). SGG_CHECK is used instead of
// STD_TORCH_CHECK because that one prefixes each message with the C++ function, file and line, and
// the messages here are for users: "sgg.<op>: <argument> <problem>".
#pragma once
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <algorithm>
#include <numeric>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sgg {

using Tensor = torch::stable::Tensor;
using OptTensor = std::optional<Tensor>;
using torch::headeronly::ScalarType;

template <typename... Args>
[[noreturn]] void fail(const Args&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw std::runtime_error(message.str());
}

#define SGG_CHECK(cond, ...)                    \
  do {                                          \
    if (!(cond)) ::sgg::fail(__VA_ARGS__);      \
  } while (0)

// torch's own spellings ([2, 3], cpu, cuda:0, torch.float32), so messages read as the user's call.
inline std::string shape_of(const Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

inline std::string device_of(const Tensor& t) {
  if (t.is_cpu()) return "cpu";
  const std::string index = std::to_string(t.get_device_index());
  if (t.is_cuda()) return "cuda:" + index;
  return "device type " + std::to_string(static_cast<int>(t.device().type())) + ":" + index;
}

inline bool same_device(const Tensor& a, const Tensor& b) {
  return a.device().type() == b.device().type() && a.get_device_index() == b.get_device_index();
}

inline std::string dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Half: return "torch.float16";
    case ScalarType::BFloat16: return "torch.bfloat16";
    case ScalarType::Float: return "torch.float32";
    case ScalarType::Double: return "torch.float64";
    case ScalarType::Bool: return "torch.bool";
    case ScalarType::Byte: return "torch.uint8";
    case ScalarType::Char: return "torch.int8";
    case ScalarType::Short: return "torch.int16";
    case ScalarType::Int: return "torch.int32";
    case ScalarType::Long: return "torch.int64";
    case ScalarType::ComplexFloat: return "torch.complex64";
    case ScalarType::ComplexDouble: return "torch.complex128";
    default: return "torch." + std::string(torch::headeronly::toString(t));
  }
}

// The dtype the kernels compute in (and w2s_loss returns): float64 for float64, float32 otherwise.
inline ScalarType accumulation_type(const Tensor& v) {
  return v.scalar_type() == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

inline bool same_sizes(const Tensor& a, const Tensor& b) {
  if (a.dim() != b.dim()) return false;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (a.size(d) != b.size(d)) return false;
  return true;
}

inline bool same_strides(const Tensor& a, const Tensor& b) {
  for (int64_t d = 0; d < a.dim(); ++d)
    if (a.stride(d) != b.stride(d)) return false;
  return true;
}

// torch's is_non_overlapping_and_dense: some order of the dims of size > 1 is contiguous.
inline bool non_overlapping_and_dense(const Tensor& t) {
  std::vector<int64_t> order(t.dim());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (t.size(a) < 2 || t.size(b) < 2) return t.size(b) < 2 && t.size(a) >= 2;  // size-1 dims last
    return t.stride(a) < t.stride(b);
  });
  int64_t expected = 1;
  for (int64_t d : order) {
    if (t.size(d) < 2) break;
    if (t.stride(d) != expected) return false;
    expected *= t.size(d);
  }
  return true;
}

}  // namespace sgg
