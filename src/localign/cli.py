"""The ``localign`` command: argparse subcommands for the non-notebook entry points.

Each subcommand lives next to the code it runs, in a module that defines
``add_arguments(parser)`` and ``main(args) -> int``. This file only dispatches, importing the module
of the chosen command, so ``localign --help`` stays fast.

A user error (bad data, a bad parameter, a missing file, a corrupt checkpoint) is printed as one
line ``localign <command>: error: ...`` and exits with status 2; any other exception keeps its
traceback, as does every exception when ``LOCALIGN_TRACEBACK=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synthcxr": ("localign.data.synthcxr.cli", "generate a SynthCXR dataset in the real MIMIC-CXR/MS-CXR/CheXpert/RSNA formats"),
    "prepare": ("localign.data.prepare", "turn raw MIMIC-CXR-JPG + reports (real or SynthCXR) into a checked manifest"),
    "pretrain": ("localign.train.cli", "pretrain a method from the registry (same code path as notebooks/03_pretrain)"),
    "evaluate": ("localign.eval.cli", "run downstream protocols on run folders and write tidy CSVs"),
    "methods": ("localign.models.registry", "list the registered method presets"),
    "report": ("localign.report", "run the notebooks of a report plan with papermill into book/_generated"),
    "check-book": ("localign.book_check", "open every page of the built book in headless Chromium and check it"),
}


def parse_set(items: list[str], example: str) -> dict:
    """``--set KEY=VALUE ...`` overrides as a dict of dotted keys; values parsed as YAML (``5``, ``[1, 2]``, ``null``)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE (e.g. {example}), got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def add_options(parser: argparse.ArgumentParser, options) -> None:
    """One argparse flag per :class:`~localign.config.Option` of a table (``--batch-size`` for
    ``batch_size``). A flag that is not given parses to the option's default, mostly ``None`` ("the recipe's or the config's
    default"); switches parse to ``True`` or ``None`` (``deterministic``: ``True``/``False``/``None``)."""
    for opt in options.values():
        kwargs: dict = {"help": opt.help, "dest": opt.name}
        if opt.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if opt.both_ways else "store_true"
            kwargs["default"] = None
        else:
            kwargs.update(type=opt.type, default=opt.default, required=opt.required)
            if opt.choices is not None:
                kwargs["choices"] = opt.choices
        parser.add_argument(opt.cli_flag, **kwargs)


def option_values(args: argparse.Namespace, options) -> dict:
    """The values of a table's flags by option name (``None`` where not given)."""
    return {name: getattr(args, name) for name in options}


# The types localign raises for bad input (ImageReadError and CheckpointError are OSError and
# ValueError; StanzaUnavailableError a RuntimeError).
USER_ERRORS = (ValueError, OSError, ImportError, RuntimeError)
_PACKAGE = Path(__file__).resolve().parent


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is one of localign's own errors about the user's input: a :data:`USER_ERRORS`
    type raised in localign's code. The same types raised inside torch, pandas, ... are unexpected
    and keep their traceback."""
    if not isinstance(err, USER_ERRORS):
        return False
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="localign", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] == "--version":
        from localign import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"localign {name}", description=help_text)
    module.add_arguments(sub)
    args = sub.parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except Exception as err:
        if not is_user_error(err) or os.environ.get("LOCALIGN_TRACEBACK") == "1":
            raise
        print(f"localign {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
