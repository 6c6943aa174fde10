"""How the ``leopard`` command loads its commands (leopard.cli.LazyGroup).

``main`` imports a command's module only when that command runs, so a query never
pays for pyarrow, kafka-python or uvicorn, and a missing optional dependency takes
down only the commands that need it. Checked in real subprocesses: a module imported
once stays in ``sys.modules`` for the rest of a pytest session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest

from leopard.cli import COMMANDS, main

HEAVY = ("pyarrow", "kafka", "uvicorn")


def python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LEOPARD_INDEX"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def imported_modules(proc: subprocess.CompletedProcess[str]) -> set[str]:
    """Module names from the ``-X importtime`` lines of stderr."""
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_check_loads_no_pyarrow_kafka_or_uvicorn() -> None:
    proc = python("-X", "importtime", "-m", "leopard", "check", "--help")
    assert proc.returncode == 0 and "Example" in proc.stdout, proc.stderr[-2000:]
    modules = imported_modules(proc)
    assert "leopard.core.index" in modules  # what check needs was loaded, and seen
    heavy = sorted(m for m in modules if m.partition(".")[0] in HEAVY)
    assert heavy == []


def test_a_command_loads_only_its_own_module() -> None:
    script = (
        "import json, sys\n"
        "from leopard.cli import main\n"
        "main(['check', '--help'], standalone_mode=False)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('leopard.cli'))))\n"
    )
    proc = python("-c", script)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.splitlines()[-1])
    assert loaded == ["leopard.cli", "leopard.cli.options", "leopard.cli.query"]


def test_the_table_names_every_command() -> None:
    ctx = click.Context(main)
    assert main.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
    assert main.get_command(ctx, "nosuch") is None


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_has_an_example_in_a_real_process(command: str) -> None:
    proc = python("-m", "leopard", command, "--help")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert f"leopard {command}" in proc.stdout.split("Example", 1)[1]


def test_a_missing_extra_disables_only_its_commands() -> None:
    # kafka-python made unimportable, as when the [kafka] extra is not installed
    script = (
        "import sys\n"
        "sys.modules['kafka'] = None\n"
        "from leopard.cli import main\n"
        "main(sys.argv[1:], prog_name='leopard')\n"
    )
    listed = python("-c", script, "--help")
    assert listed.returncode == 0, listed.stderr
    assert "consume" in listed.stdout and "check" in listed.stdout
    ran = python("-c", script, "consume", "--index", "idx", "--brokers", "b:1", "--topic", "t")
    assert ran.returncode == 1 and ran.stdout == ""
    assert "Traceback" not in ran.stderr and ran.stderr.count("\n") == 1
    assert ran.stderr.startswith("Error: leopard consume is unavailable: ")
    assert "kafka" in ran.stderr
    assert python("-c", script, "check", "--help").returncode == 0
    # serve works without a stream; following one names the missing extra
    assert python("-c", script, "serve", "--help").returncode == 0
    follow = python("-c", script, "serve", "--index", "idx", "--brokers", "b:1", "--topic", "t")
    assert follow.returncode == 1 and "Traceback" not in follow.stderr
    assert follow.stderr.startswith("Error: ") and "kafka" in follow.stderr
