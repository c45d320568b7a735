"""The ``localign`` command: argparse subcommands for the non-notebook entry points.

Each subcommand lives next to the code it runs, in a module that defines
``add_arguments(parser)`` and ``main(args) -> int``. This file only dispatches, importing the module
of the chosen command, so ``localign --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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
    return int(module.main(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
