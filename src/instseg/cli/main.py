"""The ``instseg`` console script.

Each command lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``;
the module is imported only when its command runs, so ``instseg --help`` stays fast.

Errors the user can fix (:class:`instseg.utils.errors.UserError`: a missing or corrupt file, a
bad config, an untrusted checkpoint, a wrong option value; also ``OSError`` s that name a file
and ``SystemExit("message")``) are one line on stderr, ``instseg <command>: error: <message>``,
and exit status 2. ``--debug`` (anywhere on the command line) or ``INSTSEG_DEBUG=1`` lets the
exception through with its traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
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


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with usage errors (unknown option, bad choice, missing argument) as one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _top_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(
        prog="instseg",
        description="Image and video instance segmentation toolkit.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {k:<10} {h}" for k, (_, h) in COMMANDS.items())
        + "\n\nRun `instseg <command> --help` for a command's options.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error instead of one line (also: INSTSEG_DEBUG=1)",
    )
    p.add_argument("command", nargs="?", help="one of: " + ", ".join(COMMANDS))
    return p


def debug_enabled(argv: list[str]) -> bool:
    """``--debug`` in ``argv`` (before a ``--``) or ``INSTSEG_DEBUG`` set to 1/true/yes."""
    head = argv[: argv.index("--")] if "--" in argv else argv
    env = os.environ.get("INSTSEG_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    return env or "--debug" in head


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    if "--debug" in argv:
        cut = argv.index("--") if "--" in argv else len(argv)
        argv = [a for a in argv[:cut] if a != "--debug"] + argv[cut:]
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
    parser = OneLineErrorParser(prog=f"instseg {cmd}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    args.debug = debug
    if debug:
        import logging

        logging.getLogger("instseg").setLevel(logging.DEBUG)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        message = user_error_message(e)
        if debug or message is None:
            raise
        return _report(cmd, message)
    except SystemExit as e:
        if debug or not isinstance(e.code, str):
            raise
        return _report(cmd, one_line(e.code))


def _report(cmd: str, message: str) -> int:
    prefix = f"instseg {cmd}: "
    message = message[len(prefix) :] if message.startswith(prefix) else message
    print(f"{prefix}error: {message}", file=sys.stderr)
    return 2


def user_error_message(e: BaseException) -> str | None:
    """The one-line message of an error the user caused, None for a bug (a traceback).

    :class:`~instseg.utils.errors.UserError` s, and ``OSError`` s that carry a file name
    (``open()`` of a missing file, a folder given for a file, no permission)."""
    from instseg.utils.errors import UserError

    if isinstance(e, UserError):
        return one_line(e)
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or one_line(e)}"
    return None


def one_line(text: object) -> str:
    from instseg.utils.errors import one_line as fold

    return fold(text) if isinstance(text, BaseException) else fold(Exception(str(text)))


if __name__ == "__main__":
    sys.exit(main())
