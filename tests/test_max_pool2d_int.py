"""Integer max_pool2d (uint8, int8, int16, int32, int64), forward only, as PyTorch's: fastconv's CPU kernels,
the CUDA kernel source through the SIMT emulator, and (marked needs_cuda) the CUDA kernels, compared with
torch.nn.functional.max_pool2d on the CPU exactly: values, int64 indices, dtype, shape and strides (NCHW and
channels_last outputs). fastconv.max_pool2d without return_indices runs the taps pair
(_max_pool2d_fprop_taps), so both forward ops are covered; the taps are turned back into positions from
their definition (pool_cases.tap_positions) and compared with torch's indices too.

Integers have no -inf: padding is the type's lowest(), which never wins (a window's first in-bounds tap is
the seed, so a window whose every tap is lowest() reports that first tap, and a window wholly in the
padding reports lowest()). Ties keep the first maximum. The extremes of each type are tested on purpose:
they are where a wrong padding value, a comparison in float, or an overflow would show.

Also here: PyTorch's wording for bad pooling arguments (make_pool2d_problem), the dtypes PyTorch refuses,
and the backward ops refusing integer gradients. Outputs are poisoned by conftest (integers with their
dtype's max()), so an element a kernel forgets to write fails these comparisons."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.emulation

from pool_cases import all_padding_mask, tap_positions

INT_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]
CL = torch.channels_last


class Backend:
    def __init__(self, name, device, pool, ops):
        self.name, self.device, self.pool, self.ops = name, device, pool, ops

    def __repr__(self):
        return self.name


CPU = Backend("cpu", "cpu", fastconv.max_pool2d, torch.ops.fastconv)
EMULATED = Backend("emulated", "cpu", fastconv.emulation.max_pool2d, torch.ops.fastconv_emulated)
CUDA = Backend("cuda", "cuda", fastconv.max_pool2d, torch.ops.fastconv)
BACKENDS = [pytest.param(CPU, id="cpu"), pytest.param(EMULATED, id="emulated"),
            pytest.param(CUDA, id="cuda", marks=pytest.mark.needs_cuda)]

# (name, input shape, kernel, stride, padding, dilation, ceil_mode). Channel counts reach the
# channels_last blocks of every width (16 int32, 8 int64, 64 int8 lanes) and their tails.
CASES = [
    ("overlap_pad", (2, 3, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), False),
    ("stride1_c20", (2, 20, 5, 6), (3, 3), (1, 1), (1, 1), (1, 1), False),
    ("tiling_2x2", (2, 9, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ("dilation_ceil", (2, 5, 9, 7), (3, 2), (1, 2), (1, 1), (2, 1), True),
    ("odd_ceil_c70", (1, 70, 6, 11), (2, 3), (3, 2), (1, 1), (1, 2), True),
    ("all_padding_windows", (1, 2, 3, 3), (2, 2), (1, 1), (1, 1), (4, 4), False),
    ("past_256_taps", (1, 2, 17, 20), (16, 17), (1, 3), (0, 0), (1, 1), False),
    ("batch0", (0, 3, 5, 5), (2, 2), (2, 2), (1, 0), (1, 1), True),
    ("unbatched", (3, 7, 6), (3, 2), (2, 1), (1, 1), (1, 1), True),
]


def extremes(dtype):
    info = torch.iinfo(dtype)
    return info.min, info.max


def random_values(shape, dtype, mode, seed):
    """'full': uniform over the whole range of the dtype; 'ties': a few values, the extremes among them."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = extremes(dtype)
    if mode == "full":
        # randint's high is exclusive: ask for the values below max() and put max() in separately.
        x = torch.randint(lo, hi, shape, generator=g, dtype=torch.int64).to(dtype)
        x.view(-1)[:: 7] = hi
        return x
    choices = torch.tensor(sorted({lo, lo + 1, 0, 1, 2, hi - 1, hi} | ({-1} if lo < 0 else set())),
                           dtype=torch.int64)
    return choices[torch.randint(0, len(choices), shape, generator=g)].to(dtype)


def to_layout(x, layout, device):
    x = x.to(device)
    return x.contiguous(memory_format=CL) if layout == "channels_last" and x.dim() == 4 else x


def assert_same(actual, expected):
    """Equal values, dtype, shape and strides (the output layout is PyTorch's)."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.equal(actual.cpu(), expected.cpu())
    if actual.numel() > 0:
        assert actual.stride() == expected.stride(), (actual.stride(), expected.stride())


def check_taps(taps, idx, shape, kernel, stride, padding, dilation):
    """The taps op's argmax names the elements torch's indices do; tap 0 for a window wholly in the padding."""
    H, W = shape[-2:]
    P, Q = taps.shape[-2:]
    assert taps.dtype == torch.uint8 and taps.shape == idx.shape and taps.stride() == idx.stride()
    h, w = tap_positions(taps, kernel, stride, padding, dilation)
    dead = np.broadcast_to(all_padding_mask(shape, P, Q, kernel, stride, padding, dilation), h.shape)
    t = taps.cpu().numpy()
    assert (t[dead] == 0).all()
    np.testing.assert_array_equal(np.where(dead, -1, h * W + w), np.where(dead, -1, idx.cpu().numpy()))


def torch_pool(x, *args):
    """F.max_pool2d with indices, on the CPU. PyTorch's channels_last CPU kernel keeps its argmax in an integer
    as wide as the values, so it refuses int8 and uint8 planes of more than 127 pixels (int16: 32767);
    fastconv has no such limit, and there is held to torch's NCHW result, in the channels_last layout."""
    try:
        return F.max_pool2d(x, *args, return_indices=True)
    except RuntimeError as error:
        if "numeric_limits<integer_t>" not in str(error) or not x.is_contiguous(memory_format=CL):
            raise
    y, idx = F.max_pool2d(x.contiguous(), *args, return_indices=True)
    return y.contiguous(memory_format=CL), idx.contiguous(memory_format=CL)


def check_against_torch(backend, x, kernel, stride, padding, dilation, ceil_mode):
    """Every route of the backend against F.max_pool2d on the CPU: return_indices (max_pool2d_fprop), values
    alone (the taps pair below 257 taps), and the taps op itself."""
    x_cpu = x.cpu()
    args = (kernel, stride, padding, dilation, ceil_mode)
    y_t, idx_t = torch_pool(x_cpu, *args)
    y, idx = backend.pool(x, *args, return_indices=True)
    assert y.device.type == backend.device
    assert_same(y, y_t)
    assert_same(idx, idx_t)
    assert_same(backend.pool(x, *args), y_t)
    if x.dim() == 4 and kernel[0] * kernel[1] <= 256:
        y_taps, taps = backend.ops._max_pool2d_fprop_taps(x, *map(list, args[:4]), ceil_mode)
        assert_same(y_taps, y_t)
        check_taps(taps, idx_t, x.shape, kernel, stride, padding, dilation)
    return y_t, idx_t


# ------------------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_matches_torch(backend, layout, dtype, case):
    name, shape, kernel, stride, padding, dilation, ceil_mode = case
    for seed, mode in enumerate(("full", "ties")):
        x = to_layout(random_values(shape, dtype, mode, seed), layout, backend.device)
        y_t, _ = check_against_torch(backend, x, kernel, stride, padding, dilation, ceil_mode)
        if layout == "channels_last" and x.dim() == 4 and y_t.numel() > 0:
            assert y_t.is_contiguous(memory_format=CL)  # torch's own rule, which the strides check follows
    if name == "all_padding_windows":
        assert (y_t == extremes(dtype)[0]).any()  # a window wholly in the padding outputs lowest()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_extreme_values(backend, layout, dtype):
    lo, hi = extremes(dtype)
    # Every window with padding, overlapping, and 17 channels (a channels_last block and a tail).
    geometry = ((3, 3), (2, 2), (1, 1), (1, 1), True)
    # Windows start at rows -1, 1, 3 and columns -1, 1, 3, 5 of the 5 x 6 plane; their first in-bounds taps:
    first_taps = [[h * 6 + w for w in (0, 1, 3, 5)] for h in (0, 1, 3)]
    planes = {
        "all_lowest": torch.full((5, 6), lo, dtype=torch.int64),
        "all_max": torch.full((5, 6), hi, dtype=torch.int64),
        "alternating": torch.tensor([[lo, hi] * 3, [hi, lo] * 3] * 2 + [[lo, hi] * 3]),
        "lowest_but_one": torch.full((5, 6), lo, dtype=torch.int64).index_put_((torch.tensor([4]), torch.tensor([5])),
                                                                              torch.tensor(lo + 1)),
    }
    for name, plane in planes.items():
        x = to_layout(plane.to(dtype).expand(2, 17, 5, 6).clone(), layout, backend.device)
        y_t, idx_t = check_against_torch(backend, x, *geometry)
        if name == "all_lowest":
            # Padding never wins, even against lowest(): each window reports its first in-bounds tap.
            assert (y_t == lo).all()
            assert idx_t[0, 0].tolist() == first_taps
        if name == "all_max":
            assert (y_t == hi).all()  # ties: the first in-bounds tap, the same positions
            assert idx_t[0, 0].tolist() == first_taps
        if name == "lowest_but_one":
            assert y_t[0, 0, -1, -1] == lo + 1 and idx_t[0, 0, -1, -1] == 29


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_rows_by_hand(backend, dtype):
    # One (1, len(row)) window per row, with the expected value and index written out (not from torch).
    lo, hi = extremes(dtype)
    rows = [
        ([hi, lo, hi], hi, 0),          # ties: the first maximum wins
        ([lo, hi - 1, hi, hi], hi, 2),
        ([lo, lo, lo], lo, 0),          # nothing beats lowest(): the first position
        ([lo, lo + 1, lo], lo + 1, 1),
        ([hi - 1, hi - 1, lo], hi - 1, 0),  # int64: these differ from hi only past float's 24 bits
    ]
    for layout in ("nchw", "channels_last"):
        for row, value, index in rows:
            x = to_layout(torch.tensor([[row], [row]], dtype=torch.int64).to(dtype)[None], layout, backend.device)
            y, idx = backend.pool(x, (1, len(row)), return_indices=True)
            assert y.dtype == dtype and y.flatten().tolist() == [value, value]
            assert idx.flatten().tolist() == [index, index]
            assert_same(backend.pool(x, (1, len(row))), y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_padding_is_lowest_not_zero(backend, dtype):
    # All-negative (or, for uint8, all-zero) input with padding: zero padding would win every border window.
    lo, _ = extremes(dtype)
    value = lo if lo == 0 else -3
    x = torch.full((1, 2, 4, 4), value, dtype=dtype, device=backend.device)
    y, idx = backend.pool(x, 3, 1, 1, return_indices=True)
    assert (y.cpu() == value).all()
    assert idx[0, 0].tolist() == [[0, 0, 1, 2], [0, 0, 1, 2], [4, 4, 5, 6], [8, 8, 9, 10]]
    assert_same(backend.pool(x, 3, 1, 1), y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8], ids=str)
def test_channels_last_byte_planes_past_127_pixels(backend, dtype):
    # Where PyTorch's CPU kernel refuses (its argmax lanes are bytes), fastconv pools, as torch does in NCHW.
    x = random_values((2, 3, 12, 11), dtype, "full", 7)
    with pytest.raises(RuntimeError, match="numeric_limits<integer_t>"):
        F.max_pool2d(x.contiguous(memory_format=CL), 2)
    y_t, idx_t = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    y, idx = backend.pool(x.contiguous(memory_format=CL).to(backend.device), 3, 2, 1, return_indices=True)
    assert_same(y, y_t.contiguous(memory_format=CL))
    assert_same(idx, idx_t.contiguous(memory_format=CL))


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_output_does_not_require_grad(backend):
    x = torch.randint(-5, 5, (1, 2, 4, 4), dtype=torch.int32, device=backend.device)
    with torch.enable_grad():
        y, idx = backend.pool(x, 2, return_indices=True)
        assert not y.requires_grad and y.grad_fn is None
        assert not backend.pool(x, 2).requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32], ids=str)
def test_opcheck(backend, dtype):
    x = random_values((2, 3, 7, 6), dtype, "ties", 3).to(backend.device)
    for t, args in ((x, ([3, 2], [2, 1], [1, 1], [1, 2], True)),
                    (x.contiguous(memory_format=CL), ([2, 2], [2, 2], [0, 0], [1, 1], False))):
        torch.library.opcheck(backend.ops.max_pool2d_fprop.default, (t, *args))
        torch.library.opcheck(backend.ops._max_pool2d_fprop_taps.default, (t, *args))


# ------------------------------------------------------------------------------------------------ backward
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_backward_refuses_integer_gradients(backend, dtype):
    x = torch.randint(0, 100, (1, 2, 4, 4), dtype=dtype, device=backend.device)
    args = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    y, idx = backend.ops.max_pool2d_fprop(x, *args)
    _, taps = backend.ops._max_pool2d_fprop_taps(x, *args)
    message = r"expected a floating point grad_output \(integer max_pool2d has no backward\), but got dtype"
    with pytest.raises(RuntimeError, match=message):
        backend.ops._max_pool2d_bprop(y, x, idx, *args)
    with pytest.raises(RuntimeError, match=message):
        backend.ops._max_pool2d_bprop_taps(y, x, taps, *args)
    # A floating gradient for an integer input is refused by the dtype check that names both.
    with pytest.raises(RuntimeError, match="expected grad_output of the input's dtype"):
        backend.ops._max_pool2d_bprop(y.float(), x, idx, *args)


def test_integer_tensors_cannot_require_grad():
    # Why the backward need not exist: PyTorch refuses the request before any pooling.
    with pytest.raises(RuntimeError, match="floating point"):
        torch.zeros(1, 1, 4, 4, dtype=torch.int32).requires_grad_()


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint16, torch.complex64], ids=str)
def test_dtypes_torch_refuses_raise_its_error(backend, dtype):
    x = torch.zeros(1, 1, 4, 4, dtype=dtype, device=backend.device)
    message = {torch.bool: "Bool", torch.uint16: "UInt16", torch.complex64: "ComplexFloat"}[dtype]
    message = f"\"max_pool2d\" not implemented for '{message}'"
    with pytest.raises(NotImplementedError) as torch_error:
        F.max_pool2d(x.cpu(), 2)
    assert str(torch_error.value).startswith(message)
    for call in (lambda: backend.pool(x, 2), lambda: backend.pool(x, 2, return_indices=True),
                 lambda: backend.ops.max_pool2d_fprop(x, [2, 2], [2, 2], [0, 0], [1, 1], False),
                 lambda: backend.ops._max_pool2d_fprop_taps(x, [2, 2], [2, 2], [0, 0], [1, 1], False)):
        with pytest.raises(NotImplementedError) as ours:
            call()
        assert str(ours.value).startswith(message)


# (input shape, positional arguments after the input). Each raises in torch; fastconv must say the same.
BAD_CALLS = [
    ((2, 3, 5, 5), (2, 0)),                    # stride 0
    ((2, 3, 5, 5), (2, (2, 0))),
    ((2, 3, 5, 5), (2, (-1, 0))),              # torch checks zero per axis before the sign
    ((2, 3, 5, 5), (0,)),                      # kernel 0: stride defaults to it, so "stride ... zero"
    ((2, 3, 5, 5), (2, -1)),
    ((2, 3, 5, 5), (2, (-1, 2))),
    ((2, 3, 5, 5), (0, 1)),
    ((2, 3, 5, 5), ((2, 0), 1)),
    ((2, 3, 5, 5), (-1, 1)),
    ((2, 3, 5, 5), (2, 1, 0, 0)),              # dilation
    ((2, 3, 5, 5), (2, 1, 0, (1, -1))),
    ((2, 3, 5, 5), (2, 1, -1)),                # padding
    ((2, 3, 5, 5), (2, 1, (0, -1))),
    ((2, 3, 5, 5), (2, 1, (2, 0))),            # past half the dilated window
    ((2, 3, 5, 5), (3, 1, 2, 2)),              # within half the dilated window, past half the kernel
    ((2, 3, 5, 5), (3, 1, (0, 2), 2)),
    ((2, 0, 5, 5), (2,)),                      # empty channels, height, width
    ((2, 3, 0, 5), (2,)),
    ((2, 3, 5, 0), (2,)),
    ((0, 0, 5, 5), (2,)),
    ((2, 0, 2, 2), (3,)),                      # empty before too small
    ((2, 0, 5, 5), (2, 0)),                    # stride before empty
    ((2, 0, 5, 5), (2, 1, 2)),                 # padding before empty
    ((2, 3, 2, 2), (3,)),                      # output too small
    ((2, 3, 2, 5), (2, 1, 0, 3)),
]


def torch_error(shape, args, dtype, layout="nchw"):
    x = to_layout(torch.zeros(shape, dtype=dtype), layout, "cpu")
    with pytest.raises(RuntimeError) as error:
        F.max_pool2d(x, *args, return_indices=True)
    return str(error.value).splitlines()[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.int16], ids=str)
@pytest.mark.parametrize("shape, args", BAD_CALLS, ids=[f"{i}" for i in range(len(BAD_CALLS))])
def test_bad_arguments_raise_torchs_words(backend, dtype, shape, args):
    expected = torch_error(shape, args, dtype)
    for layout in ("nchw", "channels_last"):
        x = to_layout(torch.zeros(shape, dtype=dtype), layout, backend.device)
        for return_indices in (False, True):
            with pytest.raises(RuntimeError) as ours:
                backend.pool(x, *args, return_indices=return_indices)
            assert str(ours.value).splitlines()[0] == expected


def test_stride_zero_and_empty_input_wording():
    # The two messages issue 11 names, written out rather than taken from torch.
    x = torch.zeros(2, 3, 5, 5)
    with pytest.raises(RuntimeError, match=r"^stride should not be zero$"):
        fastconv.max_pool2d(x, 2, 0)
    with pytest.raises(RuntimeError, match=r"^stride should not be zero$"):
        torch.ops.fastconv.max_pool2d_fprop(x, [2, 2], [0, 1], [0, 0], [1, 1], False)
    prefix = "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but got:"
    for shape in ((2, 0, 5, 5), (2, 3, 0, 5), (2, 3, 5, 0)):
        with pytest.raises(RuntimeError) as error:
            fastconv.max_pool2d(torch.zeros(shape, dtype=torch.int8), 2)
        assert str(error.value).splitlines()[0] == prefix + str(list(shape))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 5, 5), (3, 0, 5), (3, 5, 0)])
def test_empty_unbatched_input_wording(backend, shape):
    # PyTorch prints the 3-D size; fastconv's kernels see the input with its batch of 1 prepended, so the
    # message starts the same and names the 4-D size.
    prefix = "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but got:"
    assert torch_error(shape, (2,), torch.int32) == prefix + str(list(shape))
    with pytest.raises(RuntimeError) as ours:
        backend.pool(torch.zeros(shape, dtype=torch.int32, device=backend.device), 2)
    assert str(ours.value).startswith(prefix)
