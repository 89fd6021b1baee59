"""fastconv layers under torch.nn.parallel.DistributedDataParallel: 2 CPU processes on gloo train a small
fastconv model; its parameters after a few SGD steps equal single-process training on the same global batch."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import fastconv

STEPS, GLOBAL_BATCH, WORLD = 3, 8, 2


class Net(torch.nn.Module):
    """conv -> relu -> max_pool -> conv (groups) -> relu -> mean -> linear, every conv and pool fastconv's."""

    def __init__(self, algorithm="auto"):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        p = lambda *s: torch.nn.Parameter(torch.randn(*s, generator=g, dtype=torch.float64) * 0.3)  # noqa: E731
        self.w1, self.b1 = p(8, 3, 3, 3), p(8)
        self.w2, self.b2 = p(8, 4, 3, 3), p(8)
        self.w3, self.b3 = p(5, 8), p(5)  # from the seeded generator: every process starts alike
        self.algorithm = algorithm

    def forward(self, x):
        x = F.relu(fastconv.conv2d(x, self.w1, self.b1, padding=1, algorithm=self.algorithm))
        x = fastconv.max_pool2d(x, 3, 2, 1)
        x = F.relu(fastconv.conv2d(x, self.w2, self.b2, padding="same", groups=2, algorithm=self.algorithm))
        return F.linear(x.mean((2, 3)), self.w3, self.b3)


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, GLOBAL_BATCH, 3, 12, 12, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (STEPS, GLOBAL_BATCH), generator=g)
    return x, y


def train(model, xs, ys):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, y in zip(xs, ys):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def worker(rank, port, out, algorithm):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = torch.nn.parallel.DistributedDataParallel(Net(algorithm))
        xs, ys = data()
        share = GLOBAL_BATCH // WORLD
        train(model, xs[:, rank * share:(rank + 1) * share], ys[:, rank * share:(rank + 1) * share])
        if rank == 0:
            torch.save(model.module.state_dict(), out)
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_state(tmp_path, algorithm):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(worker, args=(free_port(), out, algorithm), nprocs=WORLD, join=True)
    return torch.load(out)


def single_state(algorithm):
    xs, ys = data()
    return train(Net(algorithm), xs, ys).state_dict()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_matches_single_process(tmp_path):
    got, want = ddp_state(tmp_path, "auto"), single_state("auto")
    start = Net().state_dict()
    assert got.keys() == want.keys()
    for name in want:
        assert not torch.equal(want[name], start[name]), f"{name} did not train"
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_ddp_matches_single_process_per_algorithm(tmp_path, algorithm):
    got, want = ddp_state(tmp_path, algorithm), single_state(algorithm)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")


def test_comparison_can_fail():
    """Training on half the batch (what a rank without the all-reduce would do) is caught."""
    xs, ys = data()
    half = train(Net(), xs[:, :GLOBAL_BATCH // WORLD], ys[:, :GLOBAL_BATCH // WORLD]).state_dict()
    want = single_state("auto")
    with pytest.raises(AssertionError):
        for name in want:
            torch.testing.assert_close(half[name], want[name], rtol=1e-12, atol=1e-12)
