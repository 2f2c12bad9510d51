// Tensor side of the kernels: turns validated tensors into a GuidanceParams. Argument checking with
// user-facing messages lives in checks.cpp; the checks here only guard memory safety for direct calls
// of the launchers (the internal op sgg::_launch, which tests and benchmarks call without checks).
#pragma once
#include "guidance_params.h"
#include "stable_tensor.h"

namespace sgg {

// nullopt when the operands need more than kMaxDims strided dims (see with_params).
inline std::optional<GuidanceParams> params_from_tensors(const Tensor& out, const OptTensor& x, const Tensor& cond,
                                                         const OptTensor& uncond, const OptTensor& weak,
                                                         const Tensor& weights, const OptTensor& step,
                                                         const OptTensor& noise) {
  const Tensor* slots[kNumSlots] = {&out, x ? &*x : nullptr, &cond, uncond ? &*uncond : nullptr,
                                    weak ? &*weak : nullptr, noise ? &*noise : nullptr};
  SGG_CHECK(cond.dim() >= 1, "sgg: cond needs a batch dimension");
  const int64_t batch = cond.size(0);
  for (const Tensor* t : slots)
    SGG_CHECK(!t || (same_sizes(*t, cond) && t->scalar_type() == cond.scalar_type() && same_device(*t, cond)),
              "sgg: operands must share shape, dtype and device");
  // A step without x would read x through a null pointer, noise without a step its coefficient.
  SGG_CHECK(x.has_value() == step.has_value(), "sgg: x and step are given together (guided_step) or not at all (guide)");
  SGG_CHECK(!noise || step, "sgg: noise needs a step");
  // [1, 2] or [2, 1] has 2 elements but is read with a stride of 2 per sample: only [n] and [B, n].
  auto check_coefs = [&](const Tensor& c, int64_t n) {
    SGG_CHECK(c.scalar_type() == ScalarType::Float && c.is_contiguous() && same_device(c, cond) &&
                  ((c.dim() == 1 && c.size(0) == n) || (c.dim() == 2 && c.size(0) == batch && c.size(1) == n)),
              "sgg: weights and step must be contiguous float32 [2] or [B, 2] on cond's device (step [3] or [B, 3] "
              "with noise)");
  };
  check_coefs(weights, 2);
  const int64_t step_columns = noise ? 3 : 2;
  if (step) check_coefs(*step, step_columns);

  GuidanceParams p{};
  for (int s = 0; s < kNumSlots; ++s) p.data[s] = slots[s] ? slots[s]->data_ptr() : nullptr;
  p.weights = static_cast<const float*>(weights.data_ptr());
  p.weights_stride = weights.dim() == 2 ? 2 : 0;
  p.step = step ? static_cast<const float*>(step->data_ptr()) : nullptr;
  p.step_stride = step && step->dim() == 2 ? step_columns : 0;
  p.batch = batch;
  p.per_sample = batch == 0 ? 0 : cond.numel() / batch;

  // Dense fast path: every operand has out's strides, covers its memory without gaps, and keeps
  // each sample in one block (true for contiguous tensors, chunk(2) halves and channels-last).
  p.dense = true;
  for (const Tensor* t : slots)
    p.dense = p.dense && (!t || (same_strides(*t, out) && non_overlapping_and_dense(*t)));
  p.dense = p.dense && (batch <= 1 || out.stride(0) == p.per_sample);
  if (p.dense) return p;

  // Strided path: drop size-1 dims and merge dims that are contiguous in every operand.
  p.ndim = 0;
  for (int64_t d = 0; d < cond.dim(); ++d) {
    if (cond.size(d) == 1) continue;
    bool merge = p.ndim > 0;
    for (int s = 0; s < kNumSlots && merge; ++s)
      merge = !slots[s] || p.strides[s][p.ndim - 1] == slots[s]->stride(d) * cond.size(d);
    if (merge) {
      p.sizes[p.ndim - 1] *= cond.size(d);
      for (int s = 0; s < kNumSlots; ++s)
        if (slots[s]) p.strides[s][p.ndim - 1] = slots[s]->stride(d);
      continue;
    }
    if (p.ndim == kMaxDims) return std::nullopt;
    p.sizes[p.ndim] = cond.size(d);
    for (int s = 0; s < kNumSlots; ++s) p.strides[s][p.ndim] = slots[s] ? slots[s]->stride(d) : 0;
    ++p.ndim;
  }
  return p;
}

// Runs launch(params). Operands whose layouts leave more than kMaxDims dims after merging (rare:
// 9+ dims, each operand laid out differently) run on contiguous copies, then out gets the result.
template <typename Launch>
void with_params(const Tensor& out, const OptTensor& x, const Tensor& cond, const OptTensor& uncond,
                 const OptTensor& weak, const Tensor& weights, const OptTensor& step, const OptTensor& noise,
                 const Launch& launch) {
  if (auto p = params_from_tensors(out, x, cond, uncond, weak, weights, step, noise)) return launch(*p);
  const auto dense = [](const OptTensor& t) { return t ? OptTensor(torch::stable::contiguous(*t)) : std::nullopt; };
  Tensor tmp = torch::stable::empty(out.sizes(), out.scalar_type(), std::nullopt, out.device());
  launch(*params_from_tensors(tmp, dense(x), torch::stable::contiguous(cond), dense(uncond), dense(weak), weights,
                              step, dense(noise)));
  Tensor target = out;
  torch::stable::copy_(target, tmp);
}

}  // namespace sgg
