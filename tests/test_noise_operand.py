"""The noise operand of guided_step and guided_step_ (stochastic steps): x_next = s0 x + s1 guide + s2 noise
in one pass, with step (s0, s1, s2) of shape [3] or [B, 3]; against the float64 reference, on every CPU
layout and SIMD build, with autograd, torch.compile, torch.export and AOTInductor; calls without noise
are unchanged."""
import os
import sys

import pytest
import torch

from helpers import DTYPES, LAYOUTS, assert_matches_reference, make
import sgg_kernels  # noqa: F401
from sgg_kernels.reference import guided_step_reference

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "cpp"))  # export_modules

SHAPES = [(1, 7), (3, 4, 9, 11), (2, 16, 32, 32), (4, 3, 5, 2, 3)]


def noisy_operands(shape, dtype, layout="contiguous", has_u=True, has_w=True, per_sample=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, cond, uncond, weak, noise = (make(shape, dtype, layout, g) for _ in range(5))
    weights = torch.rand((shape[0], 2) if per_sample else (2,), generator=g) * 4
    step = torch.randn((shape[0], 3) if per_sample else (3,), generator=g)
    return x, cond, uncond if has_u else None, weak if has_w else None, weights, step, noise


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("has_u,has_w", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("per_sample", [True, False])
def test_noisy_step_matches_the_reference(shape, dtype, has_u, has_w, per_sample):
    x, cond, uncond, weak, weights, step, noise = noisy_operands(shape, dtype, has_u=has_u, has_w=has_w,
                                                                 per_sample=per_sample)
    out = torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step, noise)
    assert_matches_reference(out, x, cond, uncond, weak, weights, step, noise=noise)
    x_in_place = x.clone()
    torch.ops.sgg.guided_step_(x_in_place, cond, uncond, weak, weights, step, noise)
    assert torch.equal(x_in_place, out)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_views_take_the_same_bits_as_contiguous_copies(layout, dtype):
    """Dense layouts run the SIMD kernel, the others the strided walk; both use one rule, so a view and
    its contiguous copy give the same bits."""
    x, cond, uncond, weak, weights, step, noise = noisy_operands((2, 4, 9, 11), dtype, layout)
    out = torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step, noise)
    copies = [t.contiguous() for t in (x, cond, uncond, weak)]
    assert torch.equal(out, torch.ops.sgg.guided_step(*copies, weights, step, noise.contiguous()))
    assert_matches_reference(out, x, cond, uncond, weak, weights, step, noise=noise)


def test_noise_of_another_layout_than_x_and_noise_that_is_cond():
    x, cond, uncond, weak, weights, step, _ = noisy_operands((3, 5, 8), torch.float32)
    noise = torch.randn(3, 8, 5).transpose(1, 2)
    out = torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step, noise)
    assert_matches_reference(out, x, cond, uncond, weak, weights, step, noise=noise)
    original = cond.clone()
    torch.ops.sgg.guided_step_(cond, cond, uncond, weak, weights, step, cond)  # x, cond and noise: one tensor
    assert_matches_reference(cond, original, original, uncond, weak, weights, step, noise=original)


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_simd_build_gives_the_same_bits(capability, dtype):
    if capability == "avx512" and torch.ops.sgg._cpu_capability() != "avx512":
        pytest.skip("this CPU has no AVX-512")
    if capability == "avx2" and torch.ops.sgg._cpu_capability() == "default":
        pytest.skip("this CPU has no AVX2")
    operands = noisy_operands((3, 5, 37, 41), dtype)
    baseline = torch.ops.sgg._cpu_capability()
    try:
        torch.ops.sgg._set_cpu_capability("default")
        want = torch.ops.sgg.guided_step(*operands)
        torch.ops.sgg._set_cpu_capability(capability)
        assert torch.equal(torch.ops.sgg.guided_step(*operands), want)
    finally:
        torch.ops.sgg._set_cpu_capability(baseline)


def test_the_same_bits_at_any_thread_count(one_thread):
    operands = noisy_operands((2, 16, 128, 128), torch.bfloat16)
    single = torch.ops.sgg.guided_step(*operands)
    torch.set_num_threads(2)
    assert torch.equal(torch.ops.sgg.guided_step(*operands), single)


def test_calls_without_noise_are_unchanged_and_the_wrappers_take_it():
    x, cond, uncond, weak, weights, step, noise = noisy_operands((3, 6), torch.float32)
    two = step[:, :2].contiguous()
    assert torch.equal(torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, two),
                       torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, two, None))
    assert torch.equal(sgg_kernels.guided_step(x, cond, uncond, weak, weights, step, noise=noise),
                       torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step, noise))
    assert torch.equal(sgg_kernels.guided_step(x, cond, None, None, (0.0, 0.0), (1.0, 0.5, 0.25), noise=noise),
                       x + 0.5 * cond + 0.25 * noise)


@pytest.mark.parametrize("change, message", [
    (dict(noise=torch.randn(3, 7)), r"sgg.guided_step: noise has shape \[3, 7\] but cond has shape \[3, 6\]"),
    (dict(noise=torch.randn(3, 6, dtype=torch.float64)), "noise has dtype torch.float64 but cond has torch.float32"),
    (dict(step=torch.rand(3, 2)), r"step must have shape \[3\] or \[B, 3\] = \[3, 3\], got \[3, 2\]"),
    (dict(step=torch.rand(2)), r"step must have shape \[3\] or \[B, 3\]"),
])
def test_bad_noise_and_step_are_named_before_anything_is_written(change, message):
    x, cond, uncond, weak, weights, step, noise = noisy_operands((3, 6), torch.float32)
    args = dict(x=x, cond=cond, uncond=uncond, weak=weak, weights=weights, step=step, noise=noise, **{})
    args.update(change)
    before = x.clone()
    for op in (torch.ops.sgg.guided_step, torch.ops.sgg.guided_step_):
        with pytest.raises(RuntimeError, match=message.replace("guided_step:", "guided_step_?:")):
            op(*args.values())
    assert torch.equal(x, before)


def test_in_place_x_partially_overlapping_noise_is_refused_eagerly_and_traced():
    x, cond, uncond, weak, weights, step, _ = noisy_operands((3, 8), torch.float32)
    buf = torch.randn(3, 10)
    x, noise = buf[:, :8], buf[:, 2:]
    before = buf.clone()
    for call in (torch.ops.sgg.guided_step_, torch.compile(torch.ops.sgg.guided_step_, backend="aot_eager")):
        with pytest.raises(Exception, match="x partially overlaps noise"):
            call(x, cond, uncond, weak, weights, step, noise)
    assert torch.equal(buf, before)


def test_gradients_of_every_input_including_noise_and_the_third_step_column():
    f64 = torch.float64
    g = torch.Generator().manual_seed(3)
    x, cond, uncond, weak, noise = (torch.randn(3, 5, dtype=f64, generator=g, requires_grad=True) for _ in range(5))
    for per_sample in (True, False):
        weights = torch.rand((3, 2) if per_sample else (2,), generator=g).requires_grad_(True)
        step = torch.randn((3, 3) if per_sample else (3,), generator=g).requires_grad_(True)
        out = torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step, noise)
        want = guided_step_reference(x, cond, uncond, weak, weights.double(), step.double(), noise=noise)
        grad = torch.randn_like(want)
        got = torch.autograd.grad(out, (x, cond, uncond, weak, noise, weights, step), grad)
        expected = torch.autograd.grad(want, (x, cond, uncond, weak, noise, weights, step), grad)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-5)
    torch.autograd.gradcheck(lambda *t: torch.ops.sgg.guided_step(*t[:4], torch.tensor([0.5, 1.0]),
                                                                  torch.tensor([1.0, -0.1, 0.3]), t[4]),
                             (x, cond, uncond, weak, noise))


def test_forward_mode_includes_the_noise_tangent():
    f64 = torch.float64
    x, cond, uncond, noise, tangent = (torch.randn(2, 4, dtype=f64) for _ in range(5))
    weights, step = torch.tensor([0.5, 0.0]), torch.tensor([1.0, -0.1, 0.3])
    _, jvp = torch.func.jvp(lambda n: torch.ops.sgg.guided_step(x, cond, uncond, None, weights, step, n), (noise,),
                            (tangent,))
    torch.testing.assert_close(jvp, 0.3 * tangent, rtol=1e-6, atol=1e-6)
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        out = torch.ops.sgg.guided_step(x, cond, uncond, None, weights, step, fwAD.make_dual(noise, tangent))
        torch.testing.assert_close(fwAD.unpack_dual(out).tangent, 0.3 * tangent, rtol=1e-6, atol=1e-6)


class NoisyStep(torch.nn.Module):
    def forward(self, x, cond, uncond, weights, step, noise):
        out = torch.ops.sgg.guided_step(x, cond, uncond, None, weights, step, noise)
        torch.ops.sgg.guided_step_(x, cond, uncond, None, weights, step, noise)
        return out, x


def test_compile_with_a_dynamic_batch_and_export_and_aoti(tmp_path):
    module = NoisyStep()

    def inputs(batch, seed=0):
        x, cond, uncond, _, weights, step, noise = noisy_operands((batch, 4, 6), torch.float32, has_w=False, seed=seed)
        return [x, cond, uncond, weights, step, noise]

    compiled = torch.compile(module, dynamic=True, fullgraph=True)
    for batch in (2, 3, 5):
        args = inputs(batch)
        want = guided_step_reference(*args[:3], None, *args[3:5], noise=args[5])
        out, written = compiled(*[a.clone() for a in args])
        torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
        assert torch.equal(written, out)
    batch = torch.export.Dim("batch", min=2)
    dims = ({0: batch},) * 3 + ({0: batch},) * 3
    program = torch.export.export(module, tuple(inputs(3)), dynamic_shapes=dims)
    package = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "noisy.pt2"))
    loaded = torch._inductor.aoti_load_package(package)
    for batch in (2, 4):
        args = inputs(batch, seed=batch)
        want = guided_step_reference(*args[:3], None, *args[3:5], noise=args[5])
        for run in (program.module(), loaded):
            out, _ = run(*[a.clone() for a in args])
            torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


OLD = os.path.join(os.path.dirname(__file__), "data", "old_schema")


def test_modules_saved_with_the_schema_before_noise_still_run():
    """step.pt and guided.pt2 were saved before the noise operand existed (tests/data/old_schema): the
    operand's default (None) fills the call they saved."""
    from export_modules import example_inputs

    scripted = torch.jit.load(os.path.join(OLD, "step.pt"))
    packaged = None
    # What compiled it: torch 2.14.1 for x86-64 with AVX2 (an AVX-512 build of it died of SIGILL on AVX2-only CPUs).
    if torch.__version__.split("+")[0] == "2.14.1" and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        packaged = torch._inductor.aoti_load_package(os.path.join(OLD, "guided.pt2"))
    for batch in (1, 3):
        x, c, u, w, shared, weights, step = example_inputs(batch, seed=batch)
        want = guided_step_reference(x, c, u, w, weights, step)
        torch.testing.assert_close(scripted(x, c, u, w, weights, step).double(), want, rtol=1e-5, atol=1e-5)
        if packaged is not None:
            guided, stepped, stepped_in_place = packaged(x, c, u, w, shared, weights, step)
            torch.testing.assert_close(stepped.double(), want, rtol=1e-5, atol=1e-5)
            assert torch.equal(stepped_in_place, stepped)
            torch.testing.assert_close(guided.double(), guided_step_reference(None, c, u, w, shared, None),
                                       rtol=1e-5, atol=1e-5)
