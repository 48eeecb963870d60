import subprocess
import sys

from instseg.cli.main import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_console_script_help_runs():
    r = subprocess.run(
        [sys.executable, "-m", "instseg.cli.main", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "instseg" in r.stdout


def test_unknown_command_fails(capsys):
    try:
        main(["frobnicate"])
    except SystemExit as e:
        assert e.code == 2
    assert "unknown command" in capsys.readouterr().err
