"""Finding the CUDA pieces a build needs, shared by setup.py and the CMake driver (.ci/cmake_ctest).
Nothing here hard-codes a machine path."""
import glob
import os
import re
import shutil
import subprocess


def cuda_toolkit_root():
    """The real toolkit root (with bin/nvcc and lib64/libcudart.so): the nvcc on PATH may be a wrapper
    script, so ask nvcc itself where it lives (its --dryrun prints TOP=<root>/bin/..)."""
    def is_toolkit(root):
        return os.path.exists(os.path.join(root, "bin", "nvcc")) and bool(
            glob.glob(os.path.join(root, "lib*", "libcudart.so*"))
            + glob.glob(os.path.join(root, "targets", "*", "lib", "libcudart.so*")))

    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var) and is_toolkit(os.environ[var]):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.MULTILINE)
    candidates = [os.path.join(os.path.dirname(os.path.realpath(nvcc)), "..")]
    if match:
        candidates.insert(0, match.group(1).strip())  # TOP is <root>/bin/.., the root itself
    for root in candidates:
        if is_toolkit(root):
            return os.path.realpath(root)
    return None


def nvidia_wheel_dirs(kind):
    """include/ or lib/ folders of the nvidia pip packages that ship beside a CUDA build of torch
    (ATen's CUDA headers want cusparse.h and cublas_v2.h, which the bare toolkit may lack)."""
    import site

    found = []
    for base in site.getsitepackages() + [site.getusersitepackages()]:
        found += sorted(glob.glob(os.path.join(base, "nvidia", "*", kind)))
    return [d for d in found if os.path.isdir(d)]
