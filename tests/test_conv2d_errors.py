"""Bad arguments to conv2d raise the same kind of exception as torch.nn.functional.conv2d, with a message
that names the argument, on every algorithm; nothing crashes."""
import pytest
import torch
import torch.nn.functional as F

import fastconv

x = torch.randn(2, 3, 8, 8)
w = torch.randn(4, 3, 3, 3)

# (name, args, kwargs, a fragment the message must contain)
BAD_CALLS = [
    ("input_rank_2", (torch.randn(8, 8), w), {}, "input"),
    ("input_rank_5", (torch.randn(1, 2, 3, 8, 8), w), {}, "input"),
    ("weight_rank_3", (x, torch.randn(4, 3, 3)), {}, "weight"),
    ("channel_mismatch", (x, torch.randn(4, 2, 3, 3)), {}, "channels"),
    ("groups_do_not_divide_out_channels", (x, torch.randn(4, 1, 3, 3)), {"groups": 3}, "groups"),
    ("groups_do_not_match_in_channels", (x, torch.randn(4, 3, 3, 3)), {"groups": 2}, "channels"),
    ("zero_groups", (x, w), {"groups": 0}, "groups"),
    ("zero_out_channels", (x, torch.randn(0, 3, 3, 3)), {}, "weight"),
    ("zero_stride", (x, w), {"stride": 0}, "stride"),
    ("negative_stride", (x, w), {"stride": (1, -2)}, "stride"),
    ("three_strides", (x, w), {"stride": (1, 1, 1)}, "stride"),
    ("zero_dilation", (x, w), {"dilation": 0}, "dilation"),
    ("negative_padding", (x, w), {"padding": -1}, "padding"),
    ("kernel_larger_than_padded_input", (x, torch.randn(4, 3, 9, 9)), {}, "Kernel size"),
    ("kernel_larger_with_dilation", (x, w), {"dilation": 4}, "Kernel size"),
    ("empty_spatial_input", (torch.randn(2, 3, 0, 8), w), {}, "Kernel size"),
    ("same_with_stride", (x, w), {"padding": "same", "stride": 2}, "same"),
    ("unknown_padding_string", (x, w), {"padding": "full"}, "padding"),
    ("bias_wrong_size", (x, w, torch.randn(5)), {}, "bias"),
    ("bias_wrong_dtype", (x, w, torch.randn(4, dtype=torch.float64)), {}, "bias"),
    ("weight_wrong_dtype", (x, w.double()), {}, "weight"),
]


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "auto"])
@pytest.mark.parametrize("name,args,kwargs,fragment", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_same_exception_kind_as_torch(name, args, kwargs, fragment, algorithm):
    with pytest.raises(Exception) as torch_error:
        F.conv2d(*args, **kwargs)
    with pytest.raises(Exception) as ours:
        fastconv.conv2d(*args, **kwargs, algorithm=algorithm)
    assert isinstance(ours.value, type(torch_error.value)), (
        f"torch raised {type(torch_error.value).__name__}, fastconv {type(ours.value).__name__}: {ours.value}")
    assert fragment.lower() in str(ours.value).lower(), str(ours.value)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_non_floating_dtypes_are_rejected_clearly(dtype):
    # PyTorch computes some of these; fastconv's kernels are floating point (or complex, through the real
    # kernels) only and say so.
    xi, wi = torch.ones(1, 2, 5, 5, dtype=dtype), torch.ones(3, 2, 3, 3, dtype=dtype)
    with pytest.raises(RuntimeError, match="floating point"):
        fastconv.conv2d(xi, wi)


def test_grad_output_of_the_wrong_size_is_rejected():
    dy = torch.randn(2, 4, 5, 5)
    with pytest.raises(RuntimeError, match="grad_output"):
        torch.ops.fastconv._conv2d_dgrad(dy, w, [2, 3, 8, 8], [1, 1], [0, 0], [1, 1], 1, "direct")
    with pytest.raises(RuntimeError, match="grad_output"):
        torch.ops.fastconv._conv2d_wgrad(dy, x, [4, 3, 3, 3], [1, 1], [0, 0], [1, 1], 1, "im2col")


def test_padding_of_the_wrong_length_is_rejected_by_the_op():
    with pytest.raises(RuntimeError, match="padding"):
        torch.ops.fastconv.conv2d_fprop(x, w, None, [1, 1], [1, 1, 1], [1, 1], 1, "direct")
