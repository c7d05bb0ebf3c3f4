"""Running the ``hf-select`` console script in-process, for the tables of bad inputs."""

from hf_select.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``(exit code, stderr)`` of ``hf-select <argv>``; argparse's own errors exit through ``SystemExit``."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage line + error, exit code 2
        code = exc.code
    return code, capsys.readouterr().err
