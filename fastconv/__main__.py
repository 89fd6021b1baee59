"""python -m fastconv [info|bench|check|demo] [options]

  info   (the default) build info and a short timing of fastconv's algorithms beside PyTorch
  bench  the standard benchmark suite (python -m fastconv bench --help)
  check  the numerical and gradient check matrix (python -m fastconv check --help)
  demo   train LeNet-5 on handwritten digits with fastconv layers beside torch.nn ones
"""
import importlib
import sys

# Each command is a module with main(argv) -> exit status; imported only when asked for.
COMMANDS = {
    "info": ("fastconv.bench", "info_main"),
    "bench": ("fastconv.bench", "main"),
    "check": ("fastconv.testing", "main"),
    "demo": ("fastconv.demo", "main"),
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and not argv[0].startswith("-") else "info"
    if command in ("help", "-h", "--help") or command not in COMMANDS:
        print(__doc__)
        return 0 if command in ("help", "-h", "--help") else 2
    module, function = COMMANDS[command]
    return getattr(importlib.import_module(module), function)(argv) or 0


if __name__ == "__main__":
    sys.exit(main())
