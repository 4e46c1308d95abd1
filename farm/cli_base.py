"""What every `farm` command and group shares: help in words and usage errors as one line
(_App, _Group, _Command), the `out`/`err` consoles, the options several commands take, and
`boundary`, where farm's errors become one red line and an exit code. Apart from farm.cli so
that farm.cli_groups can use it too without importing farm.cli (which imports the groups)."""
from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

import typer
from rich.console import Console
from typer._click.exceptions import (  # typer 0.29 carries its own click
    NoArgsIsHelpError, NoSuchOption, UsageError)
from typer.core import TyperArgument, TyperCommand, TyperGroup

from agents.spelling import with_guess
from farm.console import shown
from farm.errors import FarmError


class _WordArgument(TyperArgument):
    """An argument shown as its NAME: no type after it, no braces around it in the usage line."""

    def display_type_rich(self, ctx):
        return None

    def get_usage_pieces(self, ctx):
        name = self.metavar or (self.name.upper() + ("..." if self.nargs != 1 else ""))
        return [name if self.required else f"[{name}]"]


class _InWords:
    """--help in words. typer (0.29) writes a type after every parameter (`<bool>`, `<str>`) and
    a required argument in braces (`{sweep}`); here an argument or an option's value reads as its
    metavar (SWEEP, FILE, N), and a flag, which takes no value, as nothing."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, TyperArgument):  # typer builds these itself: no class to pass
                param.__class__ = _WordArgument
            elif getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_InWords, TyperCommand):
    pass


class _Group(_InWords, TyperGroup):
    """Command lines that farm cannot read (an unknown command or option, a value an option
    does not take, one left out), found while reading them or raised by a command: one line and
    exit 2, as for a bad sweep file, rather than typer's box."""

    def parse_args(self, ctx, args):
        with _usage(ctx):
            return super().parse_args(ctx, args)

    def invoke(self, ctx):
        with _usage(ctx):
            return super().invoke(ctx)

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            _fail(f"{ctx.command_path} has no command {name}",
                  with_guess(name, self.list_commands(ctx),
                             f"`{ctx.command_path} --help` lists its commands"), 2)
        return super().resolve_command(ctx, args)


@contextlib.contextmanager
def _usage(ctx):
    try:
        yield
    except NoArgsIsHelpError:
        raise  # a group called bare: its help, as asked
    except UsageError as error:
        command = error.ctx.command_path if error.ctx else ctx.command_path
        fix = f"`{command} --help` lists what it takes"
        if isinstance(error, NoSuchOption):
            message = f"{command} has no option {error.option_name}"
            fix = with_guess(error.option_name, error.possibilities or (), fix)
        else:
            # typer checks choices with pydantic, whose prefix says nothing to a user
            message = error.format_message().replace("Value error, ", "")
        _fail(message, fix, error.exit_code)


class _App(typer.Typer):
    """farm's commands and groups: help in words, Markdown docstrings (their lines are joined
    and wrapped to the terminal, never broken where the source's lines end)."""

    def __init__(self, **kwargs):
        super().__init__(cls=_Group, rich_markup_mode="markdown", add_completion=False, **kwargs)

    def command(self, *args, **kwargs):
        return super().command(*args, cls=_Command, **kwargs)


# Logs and pipes get a width that fits the results table; terminals keep their own.
out = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)
_debug = {"on": False}

EXIT_INTERRUPTED, EXIT_INTERNAL = 130, 70

# Options that several commands take, defined once.
DB_OPTION = typer.Option(None, "--db", metavar="DB", help="Database path or SQLAlchemy URL "
                         "(default: $FARM_DB, else ./farm.db).")
INVENTORY_OPTION = typer.Option(Path("inventory.yaml"), "--inventory", "-i", metavar="FILE",
                                help="The inventory of devices.")
RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", metavar="HOST:PORT", help="An existing "
                                  "Ray cluster (default: a private one).")
SWEEP_ARGUMENT = typer.Argument(..., metavar="SWEEP", help="The sweep's name.")


def _fail(message: str, hint: str | None, exit_code: int):
    # One line each, whatever the width: scripts grep them, people read them whole.
    err.print(f"[bold red]error:[/] {shown(message, lines=False)}", highlight=False,
              soft_wrap=True)
    if hint:
        err.print(f"[dim]hint: {shown(hint, lines=False)}[/]", highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code)


def boundary(command):
    """Turn farm's errors into one line and a distinct exit code (tracebacks only with --debug)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except FarmError as error:
            if _debug["on"]:
                err.print_exception()
            _fail(error.message, error.hint, error.exit_code)
        except KeyboardInterrupt:
            err.print("[magenta]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED)
        except (typer.Exit, typer.BadParameter):  # the latter: _Group.invoke says it
            raise
        except Exception as error:  # a bug in farm: say so plainly
            if _debug["on"]:
                err.print_exception()
            err.print(f"[bold red]internal error:[/] {type(error).__name__}: "
                      f"{shown(error, lines=False)} "
                      "(run with --debug for the traceback)", highlight=False)
            raise typer.Exit(EXIT_INTERNAL)
    return wrapper
