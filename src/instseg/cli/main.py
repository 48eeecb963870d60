"""The ``instseg`` console script.

Each command lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``;
the module is imported only when its command runs, so ``instseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help). One explicit table, no registry.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("instseg.cli.demo", "train + evaluate a small model on built-in synthetic scenes"),
    "train": ("instseg.cli.train", "train a model from a config"),
    "eval": ("instseg.cli.eval", "evaluate trained weights on a config's test set"),
    "predict": ("instseg.cli.predict", "run a model on images, folders, globs or videos"),
    "export": ("instseg.cli.export", "export a model to ONNX or TorchScript"),
    "evaluate": ("instseg.cli.evaluate", "score result files with the official metrics"),
    "data": ("instseg.cli.data", "generate / convert / split data sets"),
    "track": ("instseg.cli.track", "video instance segmentation and tracking"),
    "propagate": ("instseg.cli.propagate", "propagate first-frame object masks over a video"),
    "inpaint": ("instseg.cli.inpaint", "occlusion-aware video object inpainting"),
    "report": ("instseg.cli.report", "one self-contained HTML page about an output folder"),
}


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="instseg",
        description="Image and video instance segmentation toolkit.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {k:<10} {h}" for k, (_, h) in COMMANDS.items())
        + "\n\nRun `instseg <command> --help` for a command's options.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("command", nargs="?", help="one of: " + ", ".join(COMMANDS))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    if argv[0] == "--version":
        from instseg import __version__

        print(__version__)
        return 0
    cmd = argv[0]
    if cmd not in COMMANDS:
        top.error(f"unknown command '{cmd}' (choose from {', '.join(COMMANDS)})")
    module_name, help_text = COMMANDS[cmd]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            print(f"instseg {cmd}: not available in this version yet", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"instseg {cmd}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
