import subprocess
import sys
from dataclasses import dataclass, field

from hf_select.cli import main, parse_configs


def test_help_lists_available_commands(capsys):
    from hf_select.cli import COMMANDS

    assert main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("usage: hf-select")
    for words, (_, help_text) in COMMANDS.items():  # every command, with its own help line
        assert [line for line in lines if line.split()[: len(words)] == list(words) and help_text in line], words


def test_unknown_command_fails(capsys):
    assert main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


@dataclass
class _Args:
    ratio: float = field(default=0.6, metadata={"help": "share"})
    name: str = field(default="x", metadata={"help": "name"})


def test_configs_from_args_and_yaml(tmp_path):
    (args,) = parse_configs((_Args,), ["--ratio", "0.7"], prog="t")
    assert args.ratio == 0.7
    path = tmp_path / "c.yaml"
    path.write_text("ratio: 0.3\nname: y\n")
    (args,) = parse_configs((_Args,), [str(path)], prog="t")
    assert (args.ratio, args.name) == (0.3, "y")


def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "hf_select.cli", "demo", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--quick" in out.stdout


def test_every_command_help_renders(capsys):
    """Each installed subcommand's --help parses its config dataclasses and formats every help text."""
    import pytest

    from hf_select.cli import available_commands

    for words in available_commands():
        with pytest.raises(SystemExit) as exit_info:
            main([*words, "--help"])
        assert exit_info.value.code == 0, words
        assert "usage: hf-select " + " ".join(words) in capsys.readouterr().out
