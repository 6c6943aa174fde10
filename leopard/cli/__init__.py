"""The ``leopard`` command: a thin shell over the Python API.

Each command opens the library object, calls one method and prints. Errors the
library raises on purpose (``LeopardError``) become one line on stderr and exit
status 1, never a traceback.

This module holds only the root group ``main``. The commands live one group of them
per module (``build``, ``query``, ``stream``, ``upstream``, ``serve``, ``gen``; shared
option sets in ``options``) and are registered here by name in ``COMMANDS``. ``main`` imports a
command's module only when that command is asked for, so ``leopard check`` loads
neither pyarrow nor kafka-python nor uvicorn, and no command module imports this one.
That import by name is the deliberate exception to "no import inside a function".
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import click

from leopard.model.setcodec import COMPILED

__all__ = ["COMMANDS", "LazyGroup", "main"]

#: command name -> "module.attribute" of its click command, under leopard.cli
COMMANDS: Mapping[str, str] = {
    "build": "build.build",
    "compact": "build.compact",
    "check": "query.check",
    "groups": "query.groups",
    "members": "query.members",
    "explain": "query.explain",
    "stats": "query.stats",
    "verify": "verify.verify",
    "consume": "stream.consume",
    "follow": "upstream.follow",
    "bridge": "bridge.bridge",
    "publish": "stream.publish",
    "serve": "serve.serve_command",
    "gen": "gen.gen",
}

# A module missing under these roots is a bug to show, never an extra to ask for.
_PROJECT_ROOTS = frozenset({"leopard", "ingest"})


class LazyGroup(click.Group):
    """A group whose commands are imported from a table of names on first use."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.lazy_commands:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = self.lazy_commands[cmd_name].rpartition(".")
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:
            if not exc.name or exc.name.partition(".")[0] in _PROJECT_ROOTS:
                raise
            return _unavailable(cmd_name, exc)
        command = getattr(module, attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module.__name__}.{attribute} is not a click command")
        self.add_command(command, cmd_name)
        return command


def _unavailable(name: str, exc: ModuleNotFoundError) -> click.Command:
    """A stand-in for a command whose optional dependency (an extra) is not installed:
    ``leopard --help`` still lists it, and running it says what to install."""
    reason = f"leopard {name} is unavailable: {exc}"

    def fail() -> None:
        raise click.ClickException(reason)

    return click.Command(
        name,
        callback=fail,
        help=reason,
        short_help="(unavailable: a dependency is missing)",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def installed_version() -> str:
    """The installed distribution's version; what runs from a checkout that is not
    installed says so instead."""
    try:
        return metadata.version("leopard-index")
    except metadata.PackageNotFoundError:
        return "unknown (this checkout is not installed: pip install -e .)"


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    # which codec of stored sets is in use (setup.py builds the compiled one)
    codec = "compiled" if COMPILED else "Python"
    click.echo(f"{ctx.find_root().info_name}, version {installed_version()} ({codec} set codec)")
    ctx.exit()


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
def main() -> None:
    """Leopard: a group membership index with precomputed nested-group closures.

    Build an index from a snapshot of relation tuples, then ask it who is in what:

    \b
      leopard build org.txt --index ./idx
      leopard check user:alice group:eng --index ./idx
      export LEOPARD_INDEX=./idx; leopard groups user:alice
    """
