"""Autocast rules for the fastconv operators, mirroring torch.nn.functional.conv2d's.

PyTorch puts conv2d on autocast's lower-precision list on every device: inside ``torch.autocast(device)``
its float32 tensors of that device are cast to the autocast dtype (``torch.get_autocast_dtype``: bfloat16 by
default on the CPU, float16 on CUDA, or whatever ``dtype=`` was given), float64 and non-floating tensors are
left alone, and the op runs with autocast off. max_pool2d is on no list: it runs in its input's dtype, which
the dispatcher's autocast fallthrough already gives, so only the conv2d forward gets a rule here.

``torch.library.register_autocast`` would do the same with one fixed dtype; the rule below reads the
autocast dtype at call time instead, as PyTorch's own conv2d does. The backward needs no rule: the casts are
recorded by autograd, so gradients arrive in the parameters' own dtype (float32), as with torch's conv2d.
"""
import torch

_OPS = ("conv2d_fprop",)
_DEVICES = ("cpu", "cuda")
_libraries = []  # keep the registrations alive


def _cast(value, device_type, dtype):
    if isinstance(value, torch.Tensor):
        eligible = value.is_floating_point() and value.device.type == device_type and value.dtype != torch.float64
        return value.to(dtype) if eligible else value
    return value


def _rule(op, device_type, key):
    def kernel(_keyset, *args):
        dtype = torch.get_autocast_dtype(device_type)
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            return op(*(_cast(a, device_type, dtype) for a in args))

    return kernel


def register(namespaces=("fastconv", "fastconv_emulated")):
    for ns in namespaces:
        lib = torch.library.Library(ns, "IMPL")
        for name in _OPS:
            op = getattr(getattr(torch.ops, ns), name).default
            for device_type in _DEVICES:
                key_name = "Autocast" + torch._C._dispatch_key_for_device(device_type)
                lib.impl(name, _rule(op, device_type, getattr(torch._C.DispatchKey, key_name)), key_name,
                         with_keyset=True)
        _libraries.append(lib)


register()
