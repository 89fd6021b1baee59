"""fastconv's command line: python -m fastconv [COMMAND] [options], COMMAND one of COMMANDS below (info when
none is given); python -m fastconv --help lists them, python -m fastconv COMMAND --help gives its options."""
import argparse
import importlib
import sys

# Each command is a module's main(argv) -> exit status, imported only when asked for; it parses its own
# options, so `python -m fastconv bench --help` is bench's help.
COMMANDS = {
    "info": ("fastconv.bench", "info_main", "build info and a short timing of fastconv's algorithms beside PyTorch "
             "(the default)"),
    "bench": ("fastconv.bench", "main", "the standard benchmark suite: conv, pooling, GEMM, ResNet-18"),
    "check": ("fastconv.testing", "main", "the numerical and gradient check matrix on every backend"),
    "demo": ("fastconv.demo", "main", "train LeNet-5 on handwritten digits, fastconv layers beside torch.nn ones"),
}


def parser():
    p = argparse.ArgumentParser(prog="python -m fastconv", description="fastconv's commands (info when none is given)",
                                epilog="python -m fastconv COMMAND --help: that command's options")
    commands = p.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for name, (_, _, help_) in COMMANDS.items():
        # add_help=False: -h/--help after the command goes to the command's own parser
        commands.add_parser(name, help=help_, add_help=False)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = parser().parse_known_args(argv)
    module, function, _ = COMMANDS[args.command or "info"]
    return getattr(importlib.import_module(module), function)(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
