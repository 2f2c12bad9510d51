// An element of a strided tensor sits at offset + sum_d i_d * stride_d with 0 <= i_d < size_d. Two
// views of one buffer with the same sizes and strides collide iff their offset difference equals
// sum_d k_d * stride_d for some |k_d| < size_d; a view collides with itself iff 0 does for some k != 0.
// A depth-first search over k, outermost stride first, decides both: at each level only the k whose
// remainder the inner dims can still reach are tried, which is at most two for any layout whose
// strides nest (every tensor made by view, slice, transpose or chunk).
#include "overlap.h"

#include <algorithm>
#include <vector>

namespace sgg {
namespace {

struct Dim {
  int64_t size, stride;
};

// Search nodes before the answer is "unknown" (refused): no real layout needs more than a few hundred.
constexpr int64_t kBudget = 1 << 17;

struct Search {
  std::vector<Dim> dims;       // size > 1 only, strides descending
  std::vector<int64_t> reach;  // reach[i] = sum over j >= i of (size_j - 1) * stride_j
  int64_t budget = kBudget;

  explicit Search(std::vector<Dim> d) : dims(std::move(d)), reach(dims.size() + 1, 0) {
    std::sort(dims.begin(), dims.end(), [](Dim a, Dim b) { return a.stride > b.stride; });
    for (size_t i = dims.size(); i-- > 0;) reach[i] = reach[i + 1] + (dims[i].size - 1) * dims[i].stride;
  }

  static int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

  // Is target = sum_{j >= i} k_j * stride_j with |k_j| < size_j? budget < 0 afterwards means unknown.
  bool reachable(int64_t target, size_t i) {
    if (--budget < 0) return false;
    if (i == dims.size()) return target == 0;
    const auto [n, s] = dims[i];
    if (s == 0) return reachable(target, i + 1);
    const int64_t r = reach[i + 1];
    const int64_t lo = std::max(-(n - 1), -floor_div(r - target, s)), hi = std::min(n - 1, floor_div(target + r, s));
    for (int64_t k = lo; k <= hi; ++k)
      if (reachable(target - k * s, i + 1)) return true;
    return false;
  }

  // Some k != 0 with sum k_j * stride_j = 0; by symmetry the first non-zero k_p is positive.
  bool self_collision() {
    for (size_t p = 0; p < dims.size(); ++p) {
      const auto [n, s] = dims[p];
      if (s == 0) return true;
      for (int64_t k = 1; k <= std::min(n - 1, reach[p + 1] / s); ++k)
        if (reachable(-k * s, p + 1)) return true;
    }
    return false;
  }
};

std::vector<Dim> dims_of(const Layout& t) {
  std::vector<Dim> dims;
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    if (t.sizes[d] == 0) return {};  // empty: no elements
    if (t.sizes[d] > 1) dims.push_back({t.sizes[d], t.strides[d]});
  }
  return dims;
}

int64_t numel(const Layout& t) {
  int64_t n = 1;
  for (int64_t s : t.sizes) n *= s;
  return n;
}

}  // namespace

bool may_overlap_itself(const Layout& t) {
  Search search(dims_of(t));
  return search.self_collision() || search.budget < 0;
}

Overlap overlap(const Layout& written, const Layout& read) {
  if (numel(written) == 0 || numel(read) == 0) return Overlap::kNone;
  const auto span = [](const Layout& t) {  // first and one-past-last byte, from the storage's start
    int64_t last = t.offset;
    for (size_t d = 0; d < t.sizes.size(); ++d) last += (t.sizes[d] - 1) * t.strides[d];
    return std::make_pair(t.offset * t.itemsize, (last + 1) * t.itemsize);
  };
  const auto [w_lo, w_hi] = span(written);
  const auto [r_lo, r_hi] = span(read);
  if (w_hi <= r_lo || r_hi <= w_lo) return Overlap::kNone;
  if (written.itemsize != read.itemsize || written.sizes != read.sizes || written.strides != read.strides)
    return Overlap::kUnknown;
  if (written.offset == read.offset) return Overlap::kSame;
  Search search(dims_of(written));
  const bool collide = search.reachable(read.offset - written.offset, 0);
  return search.budget < 0 ? Overlap::kUnknown : (collide ? Overlap::kPartial : Overlap::kNone);
}

}  // namespace sgg
