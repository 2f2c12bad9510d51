// Exact memory-overlap tests for strided tensors, used to refuse in-place writes that would corrupt
// an input. torch's own test (at::get_overlap_status) compares address ranges and gives up on any
// non-dense layout, which refuses valid calls such as x, cond = buf[:, :8], buf[:, 8:].
#pragma once
#include <ATen/ATen.h>

namespace sgg {

// True if two elements of t may share memory (an expanded view, an overlapping as_strided), judged
// from sizes and strides; false when t's layout is symbolic (it is checked again when it runs).
bool may_overlap_itself(const at::Tensor& t);

enum class Overlap { kNone, kSame, kPartial, kUnknown };
// kSame: the very same elements in the same order (reading and writing them elementwise is safe).
// kUnknown: same memory, but the layouts differ too much for an exact answer.
Overlap overlap(const at::Tensor& written, const at::Tensor& read);

}  // namespace sgg
