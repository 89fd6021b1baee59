"""The sm_90 machine code of fastconv's CUDA kernels, read back from the built extension: per kernel its
registers, shared memory, stack and local bytes, resident blocks per SM on sm_90 for a block size, and the
instructions that say how it computes (tensor-core HMMA, ldmatrix LDSM, cp.async LDGSTS, local-memory
spills LDL/STL, FFMA, integer multiply-adds IMAD, conversions and special-function sequences of integer
division I2F/F2I/MUFU).

    python benchmarks/sass_report.py                 # the installed fastconv._C
    python benchmarks/sass_report.py --so path/_C.so --threads 128 --json report.json
    python benchmarks/sass_report.py --check         # exit 1 if a tensor-core kernel spills or lacks HMMA

The tools are cuobjdump (and c++filt for names) from the CUDA toolkit, or the copies torch's triton
dependency ships (triton/backends/nvidia/bin) or the nvidia pip packages (nvidia/cu13/bin). A build
without CUDA code prints so and passes --check.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import shutil
import site
import subprocess
import sys

# sm_90 (Hopper) limits, from the CUDA programming guide's compute-capability table.
SM90 = dict(registers=65536, threads=2048, blocks=32, shared=233472, shared_per_block=232448,
            register_granule=256, warp=32)
# Kernels whose names contain one of these run on tensor cores: they must issue HMMA and never spill.
TENSOR_CORE_MARKERS = ("implicit_gemm", "tensor_core", "_tc_")
COUNTED = {
    "HMMA": r"\bHMMA\b", "LDSM": r"\bLDSM\b", "LDGSTS": r"\bLDGSTS\b", "LDL": r"\bLDL\b", "STL": r"\bSTL\b",
    "FFMA": r"\bFFMA\b", "IMAD": r"\bIMAD\b", "I2F/F2I/MUFU": r"\b(I2F|F2I|MUFU)\b",
}


def find_tool(name):
    """A CUDA binary tool: on PATH, in $CUDA_HOME/bin, or shipped in a Python package beside torch."""
    candidates = [shutil.which(name)]
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", name))
    for base in site.getsitepackages() + [site.getusersitepackages()]:
        candidates += glob.glob(os.path.join(base, "triton", "backends", "nvidia", "bin", name))
        candidates += glob.glob(os.path.join(base, "nvidia", "*", "bin", name))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def default_so():
    import fastconv

    found = glob.glob(os.path.join(os.path.dirname(fastconv.__file__), "_C*.so"))
    if not found:
        sys.exit("no fastconv/_C*.so found: build the extension first")
    return found[0]


def demangle(names):
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return dict(zip(names, names))
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else dict(zip(names, names))


def short_name(full):
    """fastconv::cuda_kernels::foo_kernel<Args...>(params) -> foo_kernel<Args...>, templates abbreviated."""
    name = full.split("(")[0] if "(" in full and not full.startswith("(") else full
    name = re.sub(r"^(void )?fastconv::(cuda_kernels::)?", "", name)
    name = re.sub(r"fastconv::(cuda_kernels::)?", "", name)
    name = name.replace("c10::BFloat16", "bf16").replace("c10::Half", "f16")
    return name if len(name) <= 110 else name[:107] + "..."


def resource_usage(cuobjdump, so):
    out = subprocess.run([cuobjdump, "-res-usage", so], capture_output=True, text=True).stdout
    kernels, arch = {}, None
    for line in out.splitlines():
        m = re.match(r"\s*arch = (sm_\d+)", line)
        if m:
            arch = m.group(1)
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            current = m.group(1)
            kernels[current] = {"arch": arch}
            continue
        m = re.match(r"\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line)
        if m and kernels:
            kernels[current].update(registers=int(m.group(1)), stack=int(m.group(2)), shared=int(m.group(3)),
                                    local=int(m.group(4)))
    return kernels


def instruction_counts(cuobjdump, so):
    out = subprocess.run([cuobjdump, "-sass", so], capture_output=True, text=True).stdout
    counts, current = {}, None
    patterns = {k: re.compile(v) for k, v in COUNTED.items()}
    for line in out.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = m.group(1)
            counts[current] = dict.fromkeys(COUNTED, 0)
            continue
        if current is None or not re.match(r"\s*/\*[0-9a-f]{4,}\*/\s", line):
            continue
        instruction = line.split("*/", 1)[1].split(";")[0]
        for key, pattern in patterns.items():
            if pattern.search(instruction):
                counts[current][key] += 1
    return counts


def blocks_per_sm(registers, shared, threads):
    """Resident blocks per SM on sm_90 for this block size: the tightest of the thread, block, register
    (allocated per warp in 256-register granules) and shared-memory limits."""
    warps = math.ceil(threads / SM90["warp"])
    regs_per_warp = math.ceil(max(registers, 1) * SM90["warp"] / SM90["register_granule"]) * SM90["register_granule"]
    limits = [SM90["blocks"], SM90["threads"] // (warps * SM90["warp"]), SM90["registers"] // (regs_per_warp * warps)]
    if shared:
        limits.append(SM90["shared"] // shared if shared <= SM90["shared_per_block"] else 0)
    return min(limits)


def report(so, threads):
    cuobjdump = find_tool("cuobjdump")
    if cuobjdump is None:
        sys.exit("cuobjdump not found (CUDA toolkit, triton/backends/nvidia/bin or nvidia/*/bin)")
    usage = resource_usage(cuobjdump, so)
    counts = instruction_counts(cuobjdump, so)
    names = demangle(sorted(usage))
    rows = []
    for mangled, u in sorted(usage.items(), key=lambda kv: names[kv[0]]):
        row = {"kernel": short_name(names[mangled]), "mangled": mangled, **u, **counts.get(mangled, {})}
        row["blocks_per_sm"] = blocks_per_sm(u.get("registers", 0), u.get("shared", 0), threads)
        row["tensor_core"] = any(marker in names[mangled] for marker in TENSOR_CORE_MARKERS)
        rows.append(row)
    return rows


def problems(rows):
    """What --check fails on: a tensor-core kernel that spills (local memory) or issues no HMMA."""
    found = []
    for r in rows:
        if not r["tensor_core"]:
            continue
        if r.get("local", 0) or r.get("STL", 0) or r.get("LDL", 0):
            found.append(f"{r['kernel']}: spills to local memory ({r.get('local', 0)} bytes, {r.get('STL', 0)} STL)")
        if not r.get("HMMA", 0):
            found.append(f"{r['kernel']}: a tensor-core kernel without HMMA")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--so", help="the extension to read (default: the importable fastconv._C)")
    parser.add_argument("--threads", type=int, default=256, help="block size for the occupancy column")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 if a tensor-core kernel spills or lacks HMMA")
    args = parser.parse_args(argv)
    so = args.so or default_so()
    cuobjdump = find_tool("cuobjdump")
    if cuobjdump is None or "Fatbin elf code" not in subprocess.run(
            [cuobjdump, "-lelf", so], capture_output=True, text=True).stdout + subprocess.run(
            [cuobjdump, "-res-usage", so], capture_output=True, text=True).stdout:
        print(f"{so}: no CUDA machine code in this build (or no cuobjdump): nothing to report")
        return 0
    rows = report(so, args.threads)
    cols = ["registers", "shared", "stack", "local", "blocks_per_sm", *COUNTED]
    head = ["kernel", "regs", "smem", "stack", "local", f"blk/SM@{args.threads}", *COUNTED]
    print(f"{so}: {len(rows)} kernels (sm_90 occupancy at {args.threads} threads per block)")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join([r["kernel"]] + [str(r.get(c, "")) for c in cols]) + " |")
    tc = [r for r in rows if r["tensor_core"]]
    spills = [r for r in rows if r.get("local") or r.get("STL")]
    print(f"\ntensor-core kernels: {len(tc)}; kernels with local memory: {len(spills)}; "
          f"HMMA instructions in all: {sum(r.get('HMMA', 0) for r in rows)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.check:
        found = problems(rows)
        for p in found:
            print("FAIL", p)
        return 1 if found else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
