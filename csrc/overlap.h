// Exact memory-overlap tests for strided layouts, used to refuse in-place writes that would corrupt
// an input. torch's own test (at::get_overlap_status) compares address ranges and gives up on any
// non-dense layout, which refuses valid calls such as x, cond = buf[:, :8], buf[:, 8:]. Torch-free:
// the kernels' checks (checks.cpp) and, through the internal ops sgg::_self_overlaps and
// sgg::_overlap, the traced checks of sgg_kernels/fake_kernels.py use this one implementation.
#pragma once
#include <cstdint>
#include <vector>

namespace sgg {

// One view of a storage: sizes and strides in elements, offset in elements from the storage's start.
struct Layout {
  std::vector<int64_t> sizes, strides;
  int64_t offset = 0, itemsize = 1;
};

// True if two elements of t may share memory (an expanded view, an overlapping as_strided).
bool may_overlap_itself(const Layout& t);

enum class Overlap { kNone = 0, kSame = 1, kPartial = 2, kUnknown = 3 };
// Two views of the same storage. kSame: the very same elements in the same order (reading and
// writing them elementwise is safe). kUnknown: same memory, layouts too different for an exact answer.
Overlap overlap(const Layout& written, const Layout& read);

}  // namespace sgg
