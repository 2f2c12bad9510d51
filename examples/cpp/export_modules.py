"""Writes the two deployed models that `sgg_cpp_example --torchscript` and `--aoti` run:

    python examples/cpp/export_modules.py OUT_DIR      # OUT_DIR/step.pt and OUT_DIR/guided.pt2

- step.pt, a TorchScript module: forward(x, cond, uncond, weak, weights, step) returns
  torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step).
- guided.pt2, an AOTInductor package exported with a dynamic batch B (1 to 1024):
  (x, cond, uncond, weak, shared, weights, step) returns (guide with the shared weights,
  guided_step with the per-sample weights, x after the in-place guided_step_).

x, cond, uncond and weak are float32 [B, 4, 8, 8]; shared is float32 [2]; weights and step are
float32 [B, 2]. A model of your own runs in the example once its inputs match these, or once
main.cpp's run_torchscript/run_aoti build its inputs. The AOTInductor compile takes about a minute
on a 2-core CPU and needs a C++ compiler.
"""
from __future__ import annotations

import argparse
import os

import torch

import sgg_kernels  # noqa: F401  (loads torch.ops.sgg.*)


class Step(torch.nn.Module):
    def forward(self, x, cond, uncond, weak, weights, step):
        return torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step)


class Guided(torch.nn.Module):
    """guide with shared [2] weights, guided_step with per-sample [B, 2] weights, and the in-place step."""

    def forward(self, x, cond, uncond, weak, shared, weights, step):
        y = x.clone()
        torch.ops.sgg.guided_step_(y, cond, uncond, weak, weights, step)
        return (torch.ops.sgg.guide(cond, uncond, weak, shared),
                torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step), y)


def example_inputs(batch: int, seed: int = 0) -> tuple:
    """(x, cond, uncond, weak, shared, weights, step) of the shapes above."""
    g = torch.Generator().manual_seed(seed)
    x, c, u, w = (torch.randn(batch, 4, 8, 8, generator=g) for _ in range(4))
    return x, c, u, w, torch.tensor([0.5, 0.25]), torch.rand(batch, 2, generator=g), torch.rand(batch, 2, generator=g)


def export_torchscript(path: str) -> str:
    torch.jit.script(Step()).save(path)
    return path


def export_aoti(path: str) -> str:
    batch = torch.export.Dim("batch", min=1, max=1024)
    per_sample = {0: batch}
    dynamic = {"x": per_sample, "cond": per_sample, "uncond": per_sample, "weak": per_sample, "shared": None,
               "weights": per_sample, "step": per_sample}
    program = torch.export.export(Guided(), example_inputs(3), dynamic_shapes=dynamic)
    return torch._inductor.aoti_compile_and_package(program, package_path=path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", help="where to write step.pt and guided.pt2 (created if missing)")
    args = ap.parse_args(argv)
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        ap.error(f"out_dir: {args.out_dir} exists and is not a directory")
    os.makedirs(args.out_dir, exist_ok=True)
    print(export_torchscript(os.path.join(args.out_dir, "step.pt")))
    print(export_aoti(os.path.join(args.out_dir, "guided.pt2")))


if __name__ == "__main__":
    main()
