// Thin ATen side of the kernels: turns validated tensors into a GuidanceParams. Argument checking
// with user-facing messages lives in checks.cpp; the TORCH_CHECKs here only guard memory safety for
// direct calls of the launchers (the internal op sgg::_launch).
#pragma once
#include <ATen/ATen.h>

#include <optional>

#include "guidance_params.h"

namespace sgg {

// nullopt when the operands need more than kMaxDims strided dims (see with_params).
inline std::optional<GuidanceParams> params_from_tensors(const at::Tensor& out, const std::optional<at::Tensor>& x,
                                          const at::Tensor& cond, const std::optional<at::Tensor>& uncond,
                                          const std::optional<at::Tensor>& weak, const at::Tensor& weights,
                                          const std::optional<at::Tensor>& step) {
  const at::Tensor* slots[kNumSlots] = {&out, x ? &*x : nullptr, &cond, uncond ? &*uncond : nullptr,
                                        weak ? &*weak : nullptr};
  TORCH_CHECK(cond.dim() >= 1, "sgg: cond needs a batch dimension");
  const int64_t batch = cond.size(0);
  for (const at::Tensor* t : slots)
    TORCH_CHECK(!t || (t->sizes() == cond.sizes() && t->scalar_type() == cond.scalar_type() &&
                       t->device() == cond.device()),
                "sgg: operands must share shape, dtype and device");
  auto check_coefs = [&](const at::Tensor& c) {
    TORCH_CHECK(c.scalar_type() == at::kFloat && c.is_contiguous() && c.device() == cond.device() &&
                    (c.numel() == 2 || (c.dim() == 2 && c.size(0) == batch && c.size(1) == 2)),
                "sgg: weights and step must be contiguous float32 [2] or [B, 2] on cond's device");
  };
  check_coefs(weights);
  if (step) check_coefs(*step);

  GuidanceParams p{};
  for (int s = 0; s < kNumSlots; ++s) p.data[s] = slots[s] ? slots[s]->data_ptr() : nullptr;
  p.weights = weights.data_ptr<float>();
  p.weights_stride = weights.dim() == 2 ? 2 : 0;
  p.step = step ? step->data_ptr<float>() : nullptr;
  p.step_stride = step && step->dim() == 2 ? 2 : 0;
  p.batch = batch;
  p.per_sample = batch == 0 ? 0 : cond.numel() / batch;

  // Dense fast path: every operand has out's strides, covers its memory without gaps, and keeps
  // each sample in one block (true for contiguous tensors, chunk(2) halves and channels-last).
  p.dense = true;
  for (const at::Tensor* t : slots)
    p.dense = p.dense && (!t || (t->strides() == out.strides() && t->is_non_overlapping_and_dense()));
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
void with_params(const at::Tensor& out, const std::optional<at::Tensor>& x, const at::Tensor& cond,
                 const std::optional<at::Tensor>& uncond, const std::optional<at::Tensor>& weak,
                 const at::Tensor& weights, const std::optional<at::Tensor>& step, const Launch& launch) {
  if (auto p = params_from_tensors(out, x, cond, uncond, weak, weights, step)) return launch(*p);
  const auto dense = [](const std::optional<at::Tensor>& t) {
    return t ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
  };
  const at::Tensor tmp = at::empty(out.sizes(), out.options());
  launch(*params_from_tensors(tmp, dense(x), cond.contiguous(), dense(uncond), dense(weak), weights, step));
  out.copy_(tmp);
}

}  // namespace sgg
