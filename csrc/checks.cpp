#include "checks.h"

#include <c10/core/InferenceMode.h>

#include <string>

#include "overlap.h"

namespace sgg {
namespace {

// torch's own spelling (torch.float32), so messages read as the user wrote the call.
std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kBool: return "torch.bool";
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kShort: return "torch.int16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(t);
  }
}

bool supported(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

// The dispatcher hands a None passed for a required Tensor argument over as an undefined tensor.
void check_defined(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.defined(), "sgg.", op, ": ", name, " must be a Tensor, got None");
}

void check_batched_float(const char* op, const char* name, const at::Tensor& t) {
  check_defined(op, name, t);
  TORCH_CHECK_TYPE(supported(t.scalar_type()), "sgg.", op, ": ", name, " has dtype ", dtype_name(t.scalar_type()),
                   "; supported are float16, bfloat16, float32, float64");
  TORCH_CHECK_VALUE(t.dim() >= 1, "sgg.", op, ": ", name, " must have a batch dimension, got a 0-d tensor");
}

// Sizes are compared with expect_true: under torch.compile a size that is not known yet (an unbacked
// batch, e.g. torch._dynamo.mark_unbacked) becomes a run-time assertion instead of a guard, so one
// graph serves every batch size.
bool same_size(const c10::SymInt& a, const c10::SymInt& b) { return a.sym_eq(b).expect_true(__FILE__, __LINE__); }

bool same_sizes(const at::Tensor& a, const at::Tensor& b) {
  if (a.dim() != b.dim()) return false;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (!same_size(a.sym_size(d), b.sym_size(d))) return false;
  return true;
}

// t has ref's device, dtype and shape.
void check_operand(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
                   const char* ref_name) {
  check_defined(op, name, t);
  TORCH_CHECK_VALUE(t.device() == ref.device(), "sgg.", op, ": ", name, " is on ", t.device(), " but ", ref_name,
                    " is on ", ref.device());
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), "sgg.", op, ": ", name, " has dtype ",
                   dtype_name(t.scalar_type()), " but ", ref_name, " has ", dtype_name(ref.scalar_type()),
                   "; all operands share one dtype");
  TORCH_CHECK_VALUE(same_sizes(t, ref), "sgg.", op, ": ", name, " has shape ", t.sym_sizes(), " but ", ref_name,
                    " has shape ", ref.sym_sizes());
}

// t is a contiguous float32 [columns] or [B, columns] tensor on ref's device, B = ref.size(0). The
// rank decides which shape is meant, so a symbolic B is never compared with `columns`.
void check_coefficients(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
                        int64_t columns, const char* ref_name) {
  check_defined(op, name, t);
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, "sgg.", op, ": ", name, " must be float32, got ",
                   dtype_name(t.scalar_type()));
  TORCH_CHECK_VALUE(t.device() == ref.device(), "sgg.", op, ": ", name, " is on ", t.device(), " but ", ref_name,
                    " is on ", ref.device());
  const bool shared = t.dim() == 1 && t.sym_size(0) == columns;
  const bool per_sample = t.dim() == 2 && t.sym_size(1) == columns && same_size(t.sym_size(0), ref.sym_size(0));
  TORCH_CHECK_VALUE(shared || per_sample, "sgg.", op, ": ", name, " must have shape [", columns, "] or [B, ", columns,
                    "] = [", ref.sym_size(0), ", ", columns, "], got ", t.sym_sizes());
  TORCH_CHECK_VALUE(t.is_contiguous(), "sgg.", op, ": ", name, " must be contiguous");
}

// weights and step are not read elementwise: every sample reads [2] ones, and a [B, 2] row is read as a
// whole, so any element x shares with them (even x being that very tensor) may be overwritten before
// a later sample, or the row's other column, reads it. Judged from storage, offsets and strides, which
// traced (fake) tensors have too, so torch.compile refuses what eager refuses.
bool concrete_layout(const at::Tensor& t) { return !t.unsafeGetTensorImpl()->has_symbolic_sizes_strides(); }

void check_not_coefficients(const char* op, const at::Tensor& x, const char* name, const at::Tensor* t) {
  if (!t || !x.is_alias_of(*t)) return;
  TORCH_CHECK_VALUE(concrete_layout(x) && concrete_layout(*t) && overlap(x, *t) == Overlap::kNone, "sgg.", op, ": x shares memory with ", name,
                    ", which every sample reads while x is written; writing x in place would change ", name,
                    " before it is read. Pass a copy of ", name);
}

// x may be written in place: not an inference tensor outside inference mode, no two of its elements
// share memory, it shares no memory with a coefficient tensor, and none with an elementwise input
// unless it is that very input.
void check_writable(const char* op, const at::Tensor& x,
                    std::initializer_list<std::pair<const char*, const at::Tensor*>> inputs,
                    std::initializer_list<std::pair<const char*, const at::Tensor*>> coefficients) {
  TORCH_CHECK(!x.is_inference() || c10::InferenceMode::is_enabled(), "sgg.", op,
              ": x is an inference tensor; it can be written in place only inside torch.inference_mode()");
  // From sizes and strides alone, so a traced call (fake tensors) refuses an expanded x too.
  TORCH_CHECK_VALUE(!may_overlap_itself(x), "sgg.", op,
                    ": x has overlapping memory (an expanded or overlapping view) and cannot be written in place");
  for (const auto& [name, t] : coefficients) check_not_coefficients(op, x, name, t);
  // Traced (fake) tensors keep their storage, offsets and strides, so every torch.compile backend
  // refuses what eager refuses; only a symbolic layout is left to the run-time check.
  if (!concrete_layout(x)) return;
  for (const auto& [name, t] : inputs) {
    if (!t || !concrete_layout(*t)) continue;
    const Overlap o = overlap(x, *t);
    TORCH_CHECK_VALUE(o != Overlap::kPartial, "sgg.", op, ": x partially overlaps ", name,
                      "; writing x in place would corrupt ", name);
    TORCH_CHECK_VALUE(o != Overlap::kUnknown, "sgg.", op, ": x may overlap ", name, " (same memory, layouts too ",
                      "different to prove the elements disjoint); pass a copy of ", name);
  }
}

}  // namespace

void check_guidance_args(const char* op, const at::Tensor* x, const at::Tensor& cond,
                         const std::optional<at::Tensor>& uncond, const std::optional<at::Tensor>& weak,
                         const at::Tensor& weights, const at::Tensor* step, bool in_place) {
  check_batched_float(op, "cond", cond);
  if (x) check_operand(op, "x", *x, cond, "cond");
  if (uncond) check_operand(op, "uncond", *uncond, cond, "cond");
  if (weak) check_operand(op, "weak", *weak, cond, "cond");
  check_coefficients(op, "weights", weights, cond, 2, "cond");
  if (step) check_coefficients(op, "step", *step, cond, 2, "cond");
  if (in_place)
    check_writable(op, *x, {{"cond", &cond}, {"uncond", uncond ? &*uncond : nullptr},
                            {"weak", weak ? &*weak : nullptr}},
                   {{"weights", &weights}, {"step", step}});
}

void check_w2s_loss_args(const char* op, const at::Tensor& v, const at::Tensor& u,
                         const std::optional<at::Tensor>& weak, const std::optional<at::Tensor>& mid,
                         const at::Tensor& coefs, const at::Tensor* grad) {
  check_batched_float(op, "v", v);
  check_operand(op, "u", u, v, "v");
  if (weak) check_operand(op, "weak", *weak, v, "v");
  if (mid) check_operand(op, "mid", *mid, v, "v");
  check_coefficients(op, "coefs", coefs, v, 3, "v");
  if (grad) {
    check_defined(op, "grad", *grad);
    TORCH_CHECK_VALUE(grad->dim() == 1 && same_size(grad->sym_size(0), v.sym_size(0)) && grad->device() == v.device(),
                      "sgg.", op, ": grad must have shape [", v.sym_size(0), "] on ", v.device(), ", got ",
                      grad->sym_sizes(), " on ", grad->device());
  }
}

}  // namespace sgg
