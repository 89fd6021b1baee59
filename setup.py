"""Builds fastconv._C: CPU kernels and the SIMT emulator always; CUDA kernels when a CUDA toolkit and a
CUDA build of torch are present. FASTCONV_CUDA=1 forces the CUDA build (and fails loudly without a
toolkit), FASTCONV_CUDA=0 disables it; unset means "when available"."""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)
from setup_helpers import cuda_toolkit_root, nvidia_wheel_dirs  # noqa: E402


def want_cuda():
    flag = os.environ.get("FASTCONV_CUDA", "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    import torch

    root = cuda_toolkit_root()
    available = root is not None and torch.version.cuda is not None
    if flag in ("1", "true", "yes", "on"):
        if not available:
            sys.exit("FASTCONV_CUDA=1 but no CUDA toolkit (nvcc) or no CUDA build of torch was found")
        return True
    return available


WITH_CUDA = want_cuda()
if WITH_CUDA:
    # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
    os.environ["CUDA_HOME"] = cuda_toolkit_root()
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        import torch

        if not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"  # nothing to detect: build for Hopper only

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True))


cpp_sources = sources("csrc/*.cpp") + sources("csrc/cpu/**/*.cpp") + sources("csrc/emulator/**/*.cpp")
# -g0: Python's own CFLAGS bring -g, whose debug info of the torch headers only slows the build.
cxx_flags = ["-O3", "-g0", "-std=c++20", "-fopenmp", "-Wall", "-Wno-unused-function"]
define_macros = []
include_dirs = [os.path.join(ROOT, "csrc")]

if WITH_CUDA:
    define_macros.append(("FASTCONV_WITH_CUDA", None))
    include_dirs += nvidia_wheel_dirs("include")
    extension = CUDAExtension(
        "fastconv._C",
        cpp_sources + sources("csrc/cuda/**/*.cu"),
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args={
            "cxx": cxx_flags,
            "nvcc": ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo", "-Xcompiler=-Wall"],
        },
        extra_link_args=["-fopenmp"],
    )
else:
    extension = CppExtension(
        "fastconv._C",
        cpp_sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )

setup(
    name="fastconv",
    packages=find_packages(include=["fastconv", "fastconv.*"]),
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
