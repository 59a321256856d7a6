"""The ``neurocontrast`` command line.

Each domain registers its subcommands in its own ``commands`` module (listed in :data:`COMMAND_MODULES`)
through ``register(groups)``, where ``groups`` maps a group name to an argparse subparsers object:

- ``""``: top-level commands (``neurocontrast perfusion ...``, ``neurocontrast demo``, ``neurocontrast phantom``)
- ``"contrast"``, ``"train"``, ``"evaluate"``, ``"reader"``: ``neurocontrast <group> <command> ...``

A subcommand parser sets ``func=callable(args) -> int | None``. Heavy imports (torch, matplotlib) happen
inside those callables so that ``--help`` stays fast. Bad input (:class:`NeuroContrastError`,
``ValueError``, ``OSError`` such as a missing file or a full disk) ends with exit code 2 and a one-line reason on stderr, never a
traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from neurocontrast import __version__

#: Modules that define ``register(groups)``, each with the top-level commands or groups it adds to. Add yours
#: here. A command line loads only the modules of its command (``neurocontrast perfusion`` does not import
#: the reader study's statistics or the training code); ``--help`` at the top and unknown words load all.
COMMAND_MODULES: Dict[str, Tuple[str, ...]] = {
    "neurocontrast.perfusion.commands": ("perfusion", "phantom", "demo", "evaluate"),
    "neurocontrast.training.commands": ("train",),                       # train stnet, train tmaxnet
    "neurocontrast.contrast.commands": ("contrast", "evaluate", "train"),  # contrast ..., train virtual|differential
    "neurocontrast.readerstudy.commands": ("reader",),                   # reader init|status|analyze|mrmc
    "neurocontrast.batch.commands": ("batch",),                          # batch perfusion|virtual|amplify
    "neurocontrast.web.commands": ("web",),                              # web reader|perfusion (extra [web])
}

GROUPS = {
    "contrast": "virtual gadolinium: virtual, amplify, differential, simulate-lowdose",
    "train": "train a network (stnet, tmaxnet, virtual, differential)",
    "evaluate": "compare predictions with references (perfusion, contrast)",
    "reader": "reader studies: init, status, analyze",
    "batch": "run a command on every case of a manifest on a Dask cluster (perfusion, virtual, amplify)",
    "web": "browser apps (extra [web]: pip install \"neurocontrast[web]\"): reader, perfusion",
}


def _command_word(argv: Optional[Sequence[str]]) -> Optional[str]:
    """The first word of ``argv`` that is not an option (the command or group), or None."""
    for word in argv or ():
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The argument parser. With ``argv``, only the command modules that register its command are loaded
    (every group stays listed in ``--help``); without it, or for a word no module claims, all of them."""
    parser = argparse.ArgumentParser(
        prog="neurocontrast",
        description="NeuroContrast: DSC perfusion maps, virtual gadolinium and reader studies.")
    parser.add_argument("--version", action="version", version=f"neurocontrast {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: Dict[str, argparse._SubParsersAction] = {"": top}
    for name, help_text in GROUPS.items():
        group_parser = top.add_parser(name, help=help_text, description=help_text)
        groups[name] = group_parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
        group_parser.set_defaults(func=_group_help(group_parser))
    word = _command_word(argv)
    wanted = [m for m, words in COMMAND_MODULES.items() if word in words]
    for module_name in wanted or COMMAND_MODULES:
        if importlib.util.find_spec(module_name) is None:  # a domain not installed in this build
            logging.getLogger(__name__).debug("command module %s is absent", module_name)
            continue
        importlib.import_module(module_name).register(groups)
    return parser


def options_as_argv(args: argparse.Namespace, actions) -> List[str]:
    """The options among ``actions`` that ``args`` holds with a value other than their default, as an argv list
    (longest flag of each; store_true/false/const flags alone; list values spread), in ``actions`` order.

    Used to re-run a command with the options it was given (batch cases, torchrun workers)."""
    argv: List[str] = []
    flag_actions = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)
    for action in actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction) or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, flag_actions):
            if value == action.const:
                argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def _group_help(group_parser: argparse.ArgumentParser):
    def _print_help(_args) -> int:
        group_parser.print_help(sys.stderr)
        return 2
    return _print_help


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: parse ``argv`` and run the chosen subcommand. Returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        code = args.func(args)
    except (ValueError, OSError) as exc:  # bad input, missing files, permissions, a full disk
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"neurocontrast: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neurocontrast: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
