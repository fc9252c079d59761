"""common/cli.py: one line and exit 2 for refusals, 130 / 143 for SIGINT / SIGTERM, tracebacks only for bugs, one
spelling of each flag in --help with the other accepted."""

from __future__ import annotations

import signal
import time

import pytest
from cli_runner import run_console_script, start_console_script

from modeling_longclip.common.cli import ArgumentParser, DataclassArgumentParser, command
from modeling_longclip.common.errors import DataError


def test_refusals_bugs_and_usage_errors(capsys, tmp_path):
    @command()
    def refuses(argv=None):
        raise DataError("captions.jsonl: no column `caption`")

    @command()
    def missing_file(argv=None):
        open(tmp_path / "absent.txt")

    @command()
    def buggy(argv=None):
        raise ZeroDivisionError("a bug")

    assert refuses([]) == 2 and capsys.readouterr().err == "error: captions.jsonl: no column `caption`\n"
    assert (
        missing_file([]) == 2
        and capsys.readouterr().err == f"error: {tmp_path / 'absent.txt'}: No such file or directory\n"
    )
    with pytest.raises(ZeroDivisionError):
        buggy([])

    parser = ArgumentParser(prog="tool")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--exact-fp16", action=__import__("argparse").BooleanOptionalAction, default=True)
    assert parser.parse_args(["--batch_size", "3", "--no_exact_fp16"]).batch_size == 3
    assert parser.parse_args(["--no_exact_fp16"]).exact_fp16 is False
    shown = parser.format_help()
    assert "--batch-size" in shown and "--batch_size" not in shown and "--no_exact_fp16" not in shown
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--batch-size", "x"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_dataclass_parser_shows_dashes_and_refuses_unknown_flags_in_one_line(capsys):
    from dataclasses import dataclass

    @dataclass
    class Options:
        model_name_or_path: str = "x"

    parser = DataclassArgumentParser(Options, prog="train")
    assert parser.parse_args_into_dataclasses(["--model_name_or_path", "y"])[0].model_name_or_path == "y"
    assert "--model-name-or-path" in parser.format_help() and "--model_name_or_path" not in parser.format_help()
    with pytest.raises(SystemExit) as exited:
        parser.parse_args_into_dataclasses(["--no-such-flag", "1"])
    assert exited.value.code == 2 and capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize(
    ("sent", "status", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_interrupts_are_one_line(tmp_path, sent, status, name):
    """A console script stopped mid-run: one line naming the signal and what was kept, its exit status, no traceback."""
    output = tmp_path / "demo"
    process = start_console_script("longclip-demo", "--output-dir", output)
    deadline = time.monotonic() + 120
    while not output.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the folder appears once the command runs (its signal handling is in place)
    process.send_signal(sent)
    out, err = process.communicate(timeout=120)
    assert process.returncode == status, err
    assert err.strip().splitlines()[-1].startswith(f"interrupted ({name}):") and "Traceback" not in err


def test_umbrella_command_dispatches(tmp_path):
    listing = run_console_script("longclip", "--help")
    assert listing.returncode == 0 and "longclip convert longclip" in listing.stdout
    refused = run_console_script(
        "longclip",
        "eval",
        "--model",
        tmp_path / "nope",
        "--benchmark",
        "urban1k",
        "--data-root",
        tmp_path,
        "--output",
        tmp_path / "r.json",
    )
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
    unknown = run_console_script("longclip", "frobnicate")
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr
