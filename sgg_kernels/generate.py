"""Seed-sharded generation on torch.distributed: ``python -m sgg_kernels.generate`` (or under torchrun).

    torchrun --nproc-per-node 2 -m sgg_kernels.generate --model toy-shallow --seeds 0-49999 \\
        --schedule sgg:3,2,0.5 --steps 32 --solver heun --batch-size 256 --out out/gen

Sample i's noise and label come from its own seed (``torch.Generator().manual_seed(seed)``: the label
first, then the noise), as in EDM2's generate_images.py, not from a per-rank stream as in SiT's
sample_ddp.py. With ``--solver euler_maruyama`` the same generator, on the CPU, goes on to draw the
sample's step noise, one ``torch.randn(shape)`` per noisy step in step order (moved to the device).
The seeds are cut into batches of --batch-size in the order given, and batch k goes to group k mod
(number of groups), so a batch holds the same seeds for any world size: the output is bitwise the
same for 1, 2 or 3 ranks, and across batch sizes where the model's per-sample output does not depend
on the batch (docs/distributed.md says when that holds).

Each group writes its finished batches to OUT/parts/ atomically (a temporary file, then a rename).
Rerunning the same command after a crash skips the seeds already written; the last step merges every
requested seed exactly once into OUT/samples.npz: arr_0 the samples [N, *shape], arr_1 the labels
[N], as ADM and SiT lay out their sample files, plus `seeds` [N]. Unreadable parts and seeds written
twice are handled as `generate_folder` says, so a rerun can always finish.

Every option is checked before a file is written, the model included: one trial call of one sample
with the largest label and the given shape. A built-in toy model missing from the cache is trained
once per run: the first rank to take the cache's lock trains it, the others wait and load it.
"""
from __future__ import annotations

import argparse
import bisect
import datetime
import fcntl
import importlib
import itertools
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .distributed import BranchGroup
from .generate_folder import atomic_savez, has_parts, merge, seeds_done, set_aside_unreadable_parts
from .sampler import GRIDS, PATHS, SOLVERS, sample, timestep_grid
from .schedule import GuidanceSchedule

SCHEDULES = {"none": 0, "cfg": 1, "ag": 1, "interval": 3, "sgg": 3}  # form -> number of numbers it takes
BUILTIN_MODELS = ("toy-shallow", "toy-deep", "toy-random")


@dataclass(frozen=True)
class Source:
    """What the --model option gives: the models, the class count and one sample's shape."""

    model: Any
    weak: Any
    num_classes: int
    shape: tuple[int, ...]

    def null_labels(self, n: int) -> torch.Tensor:
        """The model's own null labels where it defines them, else label num_classes (ADM, DiT, SiT)."""
        if hasattr(self.model, "null_labels"):
            return self.model.null_labels(n)
        return torch.full((n,), self.num_classes, dtype=torch.long)


class Seeds(Sequence[int]):
    """Seeds as the ranges they were given in (0-9999999 holds two numbers, not ten million)."""

    def __init__(self, ranges: list[range]):
        self.ranges = ranges
        self.starts = list(itertools.accumulate((len(r) for r in ranges), initial=0))

    def __len__(self) -> int:
        return self.starts[-1]

    def __iter__(self) -> Iterator[int]:
        return itertools.chain.from_iterable(self.ranges)

    def __eq__(self, other) -> bool:  # equal to the list of the same seeds, compared without building it
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"Seeds({self.ranges})"

    def __getitem__(self, i):
        if isinstance(i, slice):  # a batch: a list of its seeds
            lo, hi, step = i.indices(len(self))
            if step != 1:
                raise ValueError("Seeds: slices take every seed (step 1)")
            return [self[k] for k in range(lo, hi)]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"seed index {i} is outside the {len(self)} seeds")
        k = bisect.bisect_right(self.starts, i) - 1
        return self.ranges[k][i - self.starts[k]]


def parse_seeds(text: str) -> Seeds:
    """'0-49999' (inclusive), '7', or comma-separated parts like '0-9,100-109', in the order given."""
    ranges: list[range] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi if sep else lo)
        except ValueError:
            raise ValueError(f"{part!r} is not a seed or a range like 0-49999") from None
        if first < 0 or last >= 2 ** 63:
            raise ValueError(f"{part!r} leaves the seed range [0, 2**63)")
        if last < first:
            raise ValueError(f"{part!r} is an empty range (its end comes before its start)")
        ranges.append(range(first, last + 1))
    ordered = sorted(ranges, key=lambda r: r.start)
    if any(a.stop > b.start for a, b in zip(ordered, ordered[1:])):
        raise ValueError(f"{text!r} names some seeds twice")
    return Seeds(ranges)


def parse_schedule(text: str) -> GuidanceSchedule:
    """'none', 'cfg:S', 'ag:W', 'interval:S,T_LO,T_HI' or 'sgg:S,W,TAU' (GuidanceSchedule's constructors)."""
    form, _, numbers = text.partition(":")
    if form not in SCHEDULES:
        raise ValueError(f"{text!r}: the form must be one of {', '.join(SCHEDULES)}")
    try:
        values = [float(v) for v in numbers.split(",")] if numbers else []
    except ValueError:
        raise ValueError(f"{text!r}: the values must be numbers") from None
    if len(values) != SCHEDULES[form]:
        raise ValueError(f"{text!r}: {form} takes {SCHEDULES[form]} number(s), got {len(values)}")
    build = {"none": GuidanceSchedule, "cfg": GuidanceSchedule.cfg, "ag": GuidanceSchedule.autoguidance,
             "interval": GuidanceSchedule.interval, "sgg": GuidanceSchedule.sgg}[form]
    return build(*values)


@contextmanager
def cache_lock(timeout_s: float):
    """The demo cache's file lock, so ranks (or runs) starting together train a missing model once:
    the first trains it, the others wait (at most timeout_s) and then load it from the cache."""
    from .demo.models import cache_dir
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".train.lock", "w") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another process held {cache_dir() / '.train.lock'} (training a built-in "
                                       f"model) for more than {timeout_s:g} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_source(spec: str, num_classes: Optional[int], shape: Optional[tuple[int, ...]],
                timeout_s: float = 1800) -> Source:
    """A built-in toy model by name, or `module:callable` returning the model or (model, weak model)."""
    if spec in BUILTIN_MODELS:
        from .demo.models import VelocityMLP, load_or_train
        from .demo.study import REGIMES
        from .demo.toy import LeavesMixture
        if spec == "toy-random":  # untrained and seeded: instant, for tests and smoke runs
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model, weak = VelocityMLP(4, 64, 4), VelocityMLP(4, 32, 4)
            model, weak = model.eval(), weak.eval()
        else:  # the demo's trained models, from its cache (trained once, as `make demo` does)
            regime_name = spec.removeprefix("toy-")
            regime, toy = REGIMES[regime_name], LeavesMixture(REGIMES[regime_name].toy)
            with cache_lock(timeout_s):
                model = load_or_train(toy, regime.model, f"{regime_name}-main")
                weak = load_or_train(toy, regime.weak, f"{regime_name}-weak")
        return Source(model, weak, model.num_classes if num_classes is None else num_classes, shape or (2,))
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{spec!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor module:callable")
    built = getattr(importlib.import_module(module_name), attr)()
    model, weak = built if isinstance(built, tuple) else (built, None)
    num_classes = getattr(model, "num_classes", None) if num_classes is None else num_classes
    shape = shape or getattr(model, "sample_shape", None)
    if num_classes is None or shape is None:
        raise ValueError(f"{spec!r}: give --classes and --shape (the model has no num_classes / sample_shape)")
    return Source(model, weak, int(num_classes), tuple(shape))


def seed_inputs(seeds: list[int], source: Source) -> tuple[torch.Tensor, torch.Tensor, list[torch.Generator]]:
    """Each seed's label and noise from its own generator, which is returned to draw the seed's step
    noise next: all of it independent of the batch and the rank."""
    labels, noise, generators = [], [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        labels.append(torch.randint(0, source.num_classes, (1,), generator=g))
        noise.append(torch.randn(source.shape, generator=g))
        generators.append(g)
    return torch.stack(noise), torch.cat(labels), generators


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sgg_kernels.generate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help=f"{', '.join(BUILTIN_MODELS)}, or module:callable returning "
                   "the model or (model, weak model)")
    p.add_argument("--seeds", required=True, help="seeds, e.g. 0-49999 (inclusive) or 0-9,100-109")
    p.add_argument("--out", required=True, type=Path, help="output folder (parts/, config.json, samples.npz)")
    p.add_argument("--schedule", default="sgg:3,2,0.5", help="none | cfg:S | ag:W | interval:S,T_LO,T_HI | "
                   "sgg:S,W,TAU (default sgg:3,2,0.5)")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--solver", choices=SOLVERS, default="euler")
    p.add_argument("--path", choices=PATHS, help="the model's interpolant, for --solver euler_maruyama "
                   "(default linear; the ODE solvers do not use it)")
    p.add_argument("--grid", choices=GRIDS, default="uniform")
    p.add_argument("--shift", type=float, default=3.0, help="the sd3 grid's shift")
    p.add_argument("--classes", type=int, help="labels are drawn in [0, CLASSES) (default: the model's)")
    p.add_argument("--shape", help="one sample's shape, e.g. 4,64,64 (default: the model's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--branch-parallel", type=int, choices=(1, 2), default=1,
                   help="2: groups of 2 ranks share each batch's guidance branches (the world must be even)")
    p.add_argument("--device", help="default: cuda:LOCAL_RANK when CUDA is available, else cpu")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for each process")
    p.add_argument("--timeout", type=float, default=1800, help="seconds any rank waits for the others")
    return p


def check_args(p: argparse.ArgumentParser, args, world: int) -> tuple[list[int], GuidanceSchedule, Source]:
    """Every option checked, before a process group or a file exists; errors name the option."""
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        p.error(f"--seeds: {e}")
    try:
        schedule = parse_schedule(args.schedule)
    except ValueError as e:
        p.error(f"--schedule: {e}")
    for option in ("shift", "timeout"):  # a NaN would also never equal itself in a rerun's config check
        if not math.isfinite(getattr(args, option)):
            p.error(f"--{option} must be a finite number, got {getattr(args, option)}")
    for option in ("steps", "batch_size", "timeout", "threads"):
        value = getattr(args, option)
        if value is not None and not value > 0:
            p.error(f"--{option.replace('_', '-')} must be positive, got {value}")
    if args.path is not None and args.solver != "euler_maruyama":
        p.error(f"--path {args.path}: only --solver euler_maruyama uses the interpolant (the ODE solvers "
                "integrate the velocity, whatever the path)")
    if world % args.branch_parallel:
        p.error(f"--branch-parallel {args.branch_parallel}: a world of {world} ranks does not divide into groups "
                f"of {args.branch_parallel}")
    try:
        shape = tuple(int(s) for s in args.shape.split(",")) if args.shape else None
    except ValueError:
        p.error(f"--shape must be sizes separated by commas, like 4,64,64; got {args.shape!r}")
    if shape is not None and not all(n > 0 for n in shape):
        p.error(f"--shape sizes must be positive, got {args.shape}")
    try:
        plan = schedule.plan(timestep_grid(args.steps, args.grid, args.shift)[:-1])
    except ValueError as e:
        p.error(f"--schedule {args.schedule} on --steps {args.steps} --grid {args.grid}: {e}")
    try:
        source = load_source(args.model, args.classes, shape, args.timeout)
    except (ValueError, ImportError, AttributeError, TimeoutError) as e:
        p.error(f"--model: {e}")
    if any(plan.weak) and source.weak is None:
        p.error(f"--schedule {args.schedule} uses a weak model but --model {args.model} gives none")
    if source.num_classes < 1:
        p.error(f"--classes must be at least 1, got {source.num_classes}")
    try:
        trial_call(source, schedule, args)
    except Exception as e:  # whatever the user's model raises on a shape or label it cannot take
        p.error(f"--model {args.model} with --shape {','.join(map(str, source.shape))} and --classes "
                f"{source.num_classes}: one trial sample (label {source.num_classes - 1}) failed: "
                f"{type(e).__name__}: {e}")
    return seeds, schedule, source


def trial_call(source: Source, schedule: GuidanceSchedule, args) -> None:
    """One sample, one step, with the largest label and every branch the schedule uses, on the CPU."""
    labels = torch.tensor([source.num_classes - 1])
    with torch.no_grad():
        out = sample(source.model, labels, schedule, noise=torch.zeros(1, *source.shape),
                     null_cond=source.null_labels(1), weak_model=source.weak, num_steps=1, grid=args.grid,
                     shift=args.shift, solver="euler", batch_cond_uncond=False)
    if tuple(out.x.shape) != (1, *source.shape):
        raise ValueError(f"the sample came back with shape {list(out.x.shape[1:])}, not the given shape")


def settings(args, source: Source) -> dict:
    """What decides the samples, stored in OUT/config.json: a rerun must match it."""
    config = {"model": args.model, "schedule": args.schedule, "steps": args.steps, "solver": args.solver,
              "grid": args.grid, "shift": args.shift, "classes": source.num_classes, "shape": list(source.shape)}
    if args.solver == "euler_maruyama":  # only here, so that the folders of ODE runs keep their config
        config["path"] = args.path or "linear"
    return config


def main(argv: Optional[list[str]] = None) -> Path:
    p = build_parser()
    args = p.parse_args(argv)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    seeds, schedule, source = check_args(p, args, world)
    config, config_path = settings(args, source), args.out / "config.json"
    if has_parts(args.out / "parts") and config_path.exists() and json.loads(config_path.read_text()) != config:
        old = json.loads(config_path.read_text())
        diff = ", ".join(f"{k}: {old.get(k)!r} there, {v!r} now" for k, v in config.items() if old.get(k) != v)
        p.error(f"--out {args.out} holds samples made with other settings ({diff}); use another folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or (f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available()
                                          else "cpu"))
    for m in (source.model, source.weak):
        if isinstance(m, torch.nn.Module):
            m.to(device)
    distributed = world > 1
    if distributed:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=args.timeout))
    try:
        return _generate(args, seeds, schedule, source, config, device, world, rank)
    finally:
        if distributed:
            dist.barrier()
            dist.destroy_process_group()


def _generate(args, seeds, schedule, source, config, device, world, rank) -> Path:
    bp = args.branch_parallel
    groups = world // bp
    branch_group = None
    if bp == 2:  # every rank creates every pair, in the same order, as new_group requires
        pairs = [dist.new_group([2 * g, 2 * g + 1]) for g in range(groups)]
        branch_group = BranchGroup(pairs[rank // 2], split_batch=False)  # whole batches: any model is exact
    parts = args.out / "parts"
    if rank == 0:
        parts.mkdir(parents=True, exist_ok=True)
        set_aside_unreadable_parts(parts)
        if not has_parts(parts) or not (args.out / "config.json").exists():  # no sample holds the folder yet
            tmp = args.out / f".config.json.tmp-{os.getpid()}"
            tmp.write_text(json.dumps(config, indent=1))
            os.replace(tmp, args.out / "config.json")
    if world > 1:
        dist.barrier()  # the folder is ready before any rank reads it
    done = seeds_done(parts)
    if world > 1:
        dist.barrier()  # every rank has read what is done before any writes more
    start = time.perf_counter()
    batches = [seeds[i:i + args.batch_size] for i in range(0, len(seeds), args.batch_size)]
    mine = [[s for s in b if s not in done] for k, b in enumerate(batches) if k % groups == rank // bp]
    mine = [b for b in mine if b]
    bar = tqdm(total=sum(map(len, mine)), disable=rank != 0, unit="sample", desc="generate (rank 0's share)")
    for todo in mine:
        noise, labels, generators = seed_inputs(todo, source)
        out = sample(source.model, labels.to(device), schedule, noise=noise.to(device), generator=generators,
                     null_cond=source.null_labels(len(todo)).to(device), weak_model=source.weak,
                     num_steps=args.steps, grid=args.grid, shift=args.shift, solver=args.solver,
                     path=args.path or "linear", batch_cond_uncond=False, branch_group=branch_group)
        if rank % bp == 0:  # one writer per group
            atomic_savez(parts / f"seeds-{todo[0]:09d}-{todo[-1]:09d}.npz", samples=out.x.cpu().numpy(),
                         labels=labels.numpy(), seeds=np.array(todo, dtype=np.int64))
        bar.update(len(todo))
    bar.close()
    written = torch.tensor(sum(map(len, mine)) if rank % bp == 0 else 0, device=device)
    if world > 1:
        dist.all_reduce(written)  # also: every part is written
    seconds = time.perf_counter() - start
    path = args.out / "samples.npz"
    if rank == 0:
        path = merge(args.out, seeds)
        print(f"wrote {path}: {len(seeds)} samples of shape {list(source.shape)}; generated "
              f"{int(written)} of them in this run ({groups} group(s)) in {seconds:.2f} s")
    return path


if __name__ == "__main__":
    main()
