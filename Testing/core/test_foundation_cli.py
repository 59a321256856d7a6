"""The command line frame: help, groups, one-line errors."""

import subprocess
import sys

import pytest

from neurocontrast import cli


def test_help_lists_groups(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for group in ("contrast", "train", "evaluate", "reader"):
        assert group in out


def test_every_subcommand_has_help(capsys):
    parser = cli.build_parser()
    seen = 0
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            with pytest.raises(SystemExit) as exc:
                cli.main([name, "--help"])
            assert exc.value.code == 0, name
            seen += 1
            for inner in getattr(sub, "_subparsers", None)._group_actions if sub._subparsers else []:
                for inner_name in inner.choices:
                    with pytest.raises(SystemExit) as exc:
                        cli.main([name, inner_name, "--help"])
                    assert exc.value.code == 0, (name, inner_name)
    assert seen >= 4


def test_group_without_command_exits_2():
    assert cli.main(["reader"]) == 2


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "neurocontrast", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "neurocontrast" in result.stdout
