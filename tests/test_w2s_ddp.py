"""One DistributedDataParallel training step with W2SLoss on 2 CPU processes (gloo) equals the single-process step.

Teardown order matters: a rank that destroys the process group while the DDP reducer still holds it, or
while the other rank still talks to it, can abort the process ("terminate called without an active
exception", seen in 1 of 20 runs under load). Each rank drops DDP, meets the other at a barrier, then
destroys the group, in `finally`. Every wait is bounded by TIMEOUT_S. The group meets through a file
store in the test's tmp_path, so no TCP port can be taken by another test between choosing and binding it.
"""
import datetime

import pytest
import torch
import torch.distributed as dist
from spawned_workers import spawn_and_wait

import sgg_kernels  # noqa: F401
from sgg_kernels.training import W2SLoss

WORLD, BATCH, DIM, TIMEOUT_S = 2, 8, 6, 300  # the whole test took up to 131 s at load 11


class TinyFlowModel(torch.nn.Module):
    """A velocity MLP with a class embedding (index 0 = null) and an early-exit head after the first block."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(3, 16)
        self.block1 = torch.nn.Linear(DIM + 1, 16)
        self.block2 = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, DIM)
        self.exit_head = torch.nn.Linear(16, DIM)

    def forward(self, x, t, label):
        h = torch.tanh(self.block1(torch.cat([x, t[:, None]], 1)) + self.embed(label))
        return self.head(torch.tanh(self.block2(h))), self.exit_head(h)


def make_batch():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(BATCH, DIM, generator=g), torch.randn(BATCH, DIM, generator=g)
    t = torch.rand(BATCH, generator=g)
    label = torch.randint(1, 3, (BATCH,), generator=g)
    return (1 - t[:, None]) * x0 + t[:, None] * eps, eps - x0, t, label


def loss_on(model, forward, x_t, u, t, label):
    """The segmented W2S loss; the weak (null-label) prediction runs without gradient, as in the reference."""
    v, v_mid = forward(x_t, t, label)
    with torch.no_grad():
        v_null, _ = model(x_t, t, torch.zeros_like(label))
    return W2SLoss("segmented", w_scale=0.6, weak_loss_ratio=0.2)(v, u, t, weak=v_null, mid=v_mid)


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def ddp_worker(rank, store_path, out_path):
    torch.set_num_threads(1)  # two ranks on a 2-core machine shared with other jobs: no oversubscription
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    ddp = None
    try:
        torch.manual_seed(0)
        model = TinyFlowModel()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        shard = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        loss_on(model, ddp, *(x[shard] for x in make_batch())).backward()
        if rank == 0:
            torch.save(gradients(model), out_path)
    finally:
        del ddp  # the reducer holds the group: release it before the group goes
        try:
            dist.barrier()  # neither rank destroys the group while the other may still use it
        finally:
            dist.destroy_process_group()


@pytest.mark.multiprocess
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_ddp_step_gradients_equal_single_process(tmp_path):
    out_path = tmp_path / "ddp_grads.pt"
    spawn_and_wait(ddp_worker, (str(tmp_path / "store"), str(out_path)), WORLD, TIMEOUT_S,
                   f"the {WORLD}-process DDP step")

    torch.manual_seed(0)
    model = TinyFlowModel()
    loss_on(model, model, *make_batch()).backward()
    expected = gradients(model)
    got = torch.load(out_path)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)
