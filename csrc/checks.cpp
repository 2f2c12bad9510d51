#include "checks.h"

#include <array>

#include "overlap.h"

namespace sgg {
namespace {

bool supported(ScalarType t) {
  return t == ScalarType::Half || t == ScalarType::BFloat16 || t == ScalarType::Float || t == ScalarType::Double;
}

// The dispatcher hands a None passed for a required Tensor argument over as an undefined tensor.
void check_defined(const char* op, const char* name, const Tensor& t) {
  SGG_CHECK(t.defined(), "sgg.", op, ": ", name, " must be a Tensor, got None");
}

void check_batched_float(const char* op, const char* name, const Tensor& t) {
  check_defined(op, name, t);
  SGG_CHECK(supported(t.scalar_type()), "sgg.", op, ": ", name, " has dtype ", dtype_name(t.scalar_type()),
            "; supported are float16, bfloat16, float32, float64");
  SGG_CHECK(t.dim() >= 1, "sgg.", op, ": ", name, " must have a batch dimension, got a 0-d tensor");
}

// t has ref's device, dtype and shape.
void check_operand(const char* op, const char* name, const Tensor& t, const Tensor& ref, const char* ref_name) {
  check_defined(op, name, t);
  SGG_CHECK(same_device(t, ref), "sgg.", op, ": ", name, " is on ", device_of(t), " but ", ref_name, " is on ",
            device_of(ref));
  SGG_CHECK(t.scalar_type() == ref.scalar_type(), "sgg.", op, ": ", name, " has dtype ", dtype_name(t.scalar_type()),
            " but ", ref_name, " has ", dtype_name(ref.scalar_type()), "; all operands share one dtype");
  SGG_CHECK(same_sizes(t, ref), "sgg.", op, ": ", name, " has shape ", shape_of(t), " but ", ref_name,
            " has shape ", shape_of(ref));
}

// t is a contiguous float32 [columns] or [B, columns] tensor on ref's device, B = ref.size(0).
void check_coefficients(const char* op, const char* name, const Tensor& t, const Tensor& ref, int64_t columns,
                        const char* ref_name) {
  check_defined(op, name, t);
  SGG_CHECK(t.scalar_type() == ScalarType::Float, "sgg.", op, ": ", name, " must be float32, got ",
            dtype_name(t.scalar_type()));
  SGG_CHECK(same_device(t, ref), "sgg.", op, ": ", name, " is on ", device_of(t), " but ", ref_name, " is on ",
            device_of(ref));
  const bool shared = t.dim() == 1 && t.size(0) == columns;
  const bool per_sample = t.dim() == 2 && t.size(1) == columns && t.size(0) == ref.size(0);
  SGG_CHECK(shared || per_sample, "sgg.", op, ": ", name, " must have shape [", columns, "] or [B, ", columns,
            "] = [", ref.size(0), ", ", columns, "], got ", shape_of(t));
  SGG_CHECK(t.is_contiguous(), "sgg.", op, ": ", name, " must be contiguous");
}

Layout layout_of(const Tensor& t) {
  Layout l;
  for (int64_t d = 0; d < t.dim(); ++d) {
    l.sizes.push_back(t.size(d));
    l.strides.push_back(t.stride(d));
  }
  l.offset = t.storage_offset();
  l.itemsize = static_cast<int64_t>(t.element_size());
  return l;
}

// The stable ABI has no storage identity; a storage's start address stands for it (two live
// storages never share one, and an empty tensor overlaps nothing).
const char* storage_start(const Tensor& t) {
  return static_cast<const char*>(t.data_ptr()) - t.storage_offset() * static_cast<int64_t>(t.element_size());
}

Overlap overlap(const Tensor& written, const Tensor& read) {
  if (written.numel() == 0 || read.numel() == 0 || storage_start(written) != storage_start(read))
    return Overlap::kNone;
  return overlap(layout_of(written), layout_of(read));
}

bool call_is_inference(const Tensor& t) {
  std::array<StableIValue, 1> stack{torch::stable::detail::from(t)};
  const auto err = torch_call_dispatcher("aten::is_inference", "", stack.data(), TORCH_ABI_VERSION);
  SGG_CHECK(err == AOTI_TORCH_SUCCESS, "sgg: aten::is_inference failed");
  return torch::stable::detail::to<bool>(stack[0]);
}

// Inference mode has no stable query; a tensor made now is an inference tensor exactly inside it.
bool inference_mode_enabled(const Tensor& like) {
  return call_is_inference(torch::stable::empty({0}, ScalarType::Float, std::nullopt, like.device()));
}

// weights and step are not read elementwise: every sample reads [2] ones, and a [B, 2] row is read as a
// whole, so any element x shares with them (even x being that very tensor) may be overwritten before
// a later sample, or the row's other column, reads it.
void check_not_coefficients(const char* op, const Tensor& x, const char* name, const Tensor* t) {
  if (!t) return;
  SGG_CHECK(overlap(x, *t) == Overlap::kNone, "sgg.", op, ": x shares memory with ", name, ", which every sample ",
            "reads while x is written; writing x in place would change ", name, " before it is read. Pass a copy of ",
            name);
}

// x may be written in place: not an inference tensor outside inference mode, no two of its elements
// share memory, it shares no memory with a coefficient tensor, and none with an elementwise input
// unless it is that very input.
void check_writable(const char* op, const Tensor& x, std::initializer_list<std::pair<const char*, const Tensor*>> inputs,
                    std::initializer_list<std::pair<const char*, const Tensor*>> coefficients) {
  // Inference tensors have no Autograd or ADInplaceOrView key, so only the kernel itself sees them.
  SGG_CHECK(!call_is_inference(x) || inference_mode_enabled(x), "sgg.", op,
            ": x is an inference tensor; it can be written in place only inside torch.inference_mode()");
  SGG_CHECK(!may_overlap_itself(layout_of(x)), "sgg.", op,
            ": x has overlapping memory (an expanded or overlapping view) and cannot be written in place");
  for (const auto& [name, t] : coefficients) check_not_coefficients(op, x, name, t);
  for (const auto& [name, t] : inputs) {
    if (!t) continue;
    const Overlap o = overlap(x, *t);
    SGG_CHECK(o != Overlap::kPartial, "sgg.", op, ": x partially overlaps ", name, "; writing x in place would corrupt ",
              name);
    SGG_CHECK(o != Overlap::kUnknown, "sgg.", op, ": x may overlap ", name, " (same memory, layouts too ",
              "different to prove the elements disjoint); pass a copy of ", name);
  }
}

}  // namespace

void check_guidance_args(const char* op, const Tensor* x, const Tensor& cond, const OptTensor& uncond,
                         const OptTensor& weak, const Tensor& weights, const Tensor* step, const OptTensor& noise,
                         bool in_place) {
  check_batched_float(op, "cond", cond);
  if (x) check_operand(op, "x", *x, cond, "cond");
  if (uncond) check_operand(op, "uncond", *uncond, cond, "cond");
  if (weak) check_operand(op, "weak", *weak, cond, "cond");
  if (noise) check_operand(op, "noise", *noise, cond, "cond");
  check_coefficients(op, "weights", weights, cond, 2, "cond");
  if (step) check_coefficients(op, "step", *step, cond, noise ? 3 : 2, "cond");
  if (in_place)
    check_writable(op, *x, {{"cond", &cond}, {"uncond", uncond ? &*uncond : nullptr},
                            {"weak", weak ? &*weak : nullptr}, {"noise", noise ? &*noise : nullptr}},
                   {{"weights", &weights}, {"step", step}});
}

void check_w2s_loss_args(const char* op, const Tensor& v, const Tensor& u, const OptTensor& weak, const OptTensor& mid,
                         const Tensor& coefs, const Tensor* grad) {
  check_batched_float(op, "v", v);
  check_operand(op, "u", u, v, "v");
  if (weak) check_operand(op, "weak", *weak, v, "v");
  if (mid) check_operand(op, "mid", *mid, v, "v");
  check_coefficients(op, "coefs", coefs, v, 3, "v");
  if (grad) {
    check_defined(op, "grad", *grad);
    SGG_CHECK(grad->dim() == 1 && grad->size(0) == v.size(0) && same_device(*grad, v), "sgg.", op,
              ": grad must have shape [", v.size(0), "] on ", device_of(v), ", got ", shape_of(*grad), " on ",
              device_of(*grad));
  }
}

}  // namespace sgg
