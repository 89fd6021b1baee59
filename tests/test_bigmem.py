"""Tensors of more than 2^31 elements (64-bit indexing): opt in with --run-bigmem, and skipped when the
machine lacks the memory. A slice at the far end, past element 2^31, is compared with the reference."""
import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv import reference

pytestmark = pytest.mark.bigmem

# (1, 2, 2^15, 2^15 + 8) float32: 2^31 + 2^19 elements, 8 GiB.
SHAPE = (1, 2, 2 ** 15, 2 ** 15 + 8)
NUMEL = SHAPE[0] * SHAPE[1] * SHAPE[2] * SHAPE[3]


def mem_available_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return 0.0


def need_gib(gib):
    have = mem_available_gib()
    if have < gib:
        pytest.skip(f"needs {gib} GiB of available memory, MemAvailable is {have:.1f} GiB")


def big_input():
    assert NUMEL > 2 ** 31
    x = torch.empty(SHAPE)
    x.view(-1)[: 2 ** 20].uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
    # A cheap fill that still differs everywhere that matters: a random block tiled, plus a row ramp.
    x.view(-1, 2 ** 20)[1:] = x.view(-1, 2 ** 20)[:1]
    x += torch.linspace(0, 1, SHAPE[2]).view(1, 1, -1, 1)
    return x


def test_conv2d_direct_over_2_31_elements():
    need_gib(14)
    x = big_input()
    w = torch.tensor([[[[0.5]], [[-2.0]]]])  # 1x1, 2 -> 1 channels
    b = torch.tensor([0.25])
    y = fastconv.conv2d(x, w, b, stride=2, algorithm="direct")
    assert y.shape == (1, 1, SHAPE[2] // 2, (SHAPE[3] + 1) // 2)
    tail = x[:, :, -8:, :].double().numpy()  # the last rows lie past element 2^31 of the input
    want = reference.conv2d_fprop(tail, w.double().numpy(), b.double().numpy(), stride=(2, 2))
    torch.testing.assert_close(y[:, :, -4:, :].double(), torch.as_tensor(want), rtol=1e-6, atol=1e-6)
    head = F.conv2d(x[:, :, :8, :], w, b, stride=2)
    torch.testing.assert_close(y[:, :, :4, :], head)


def test_max_pool2d_over_2_31_elements():
    need_gib(26)  # x and its gradient (8 GiB each), output, indices (int64)
    x = big_input()
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    tail = x[:, :, -8:, :]
    want, want_idx = reference.max_pool2d_fprop(tail.double().numpy(), 2)
    assert torch.equal(y[:, :, -4:, :].double(), torch.as_tensor(want))
    # indices are flat positions in the whole plane: shift the slice's by its first row
    assert torch.equal(idx[:, :, -4:, :], torch.as_tensor(want_idx) + (SHAPE[2] - 8) * SHAPE[3])
    del idx
    # backward over the whole tensor: gradient lands at the argmax past 2^31 too
    xg = x.requires_grad_()
    fastconv.max_pool2d(xg, 2).sum().backward()
    g_tail = xg.grad[:, :, -8:, :]
    assert g_tail.sum().item() == want.size and ((g_tail == 0) | (g_tail == 1)).all()
