"""The command groups `farm devices ...`, `farm sweeps ...` and `farm exits ...`: the
inventory's devices (state, check, trust, release), removing a sweep, fitting exit heads.
Apart from farm.cli, which adds them to `farm` after its own commands, to keep each module
within STYLE.md's ~400 lines; what they share with it is in farm.cli_base."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from farm.cli_base import DB_OPTION, INVENTORY_OPTION, SWEEP_ARGUMENT, _App, boundary, err, out
from farm.console import shown, visible
from farm.errors import DeviceError


devices_app = _App(help="The inventory's devices: state, health, trust.")
# A subcommand's own -i/--db, where given, wins over the group's (`farm devices -i lab.yaml check`).
OWN_INVENTORY_OPTION = typer.Option(None, "--inventory", "-i", metavar="FILE",
                                    help="The inventory of devices (default: the one "
                                    "`farm devices` was given, else inventory.yaml).")
OWN_DB_OPTION = typer.Option(None, "--db", metavar="DB", help="Database path or SQLAlchemy URL "
                             "(default: the one `farm devices` was given, else $FARM_DB, else "
                             "./farm.db).")


def _or_group(ctx: typer.Context, name: str, own):
    """A `farm devices` subcommand's own option where given, else the group's."""
    return ctx.parent.params[name] if own is None else own


@devices_app.callback(invoke_without_command=True)
@boundary
def devices(ctx: typer.Context, inventory: Path = INVENTORY_OPTION, db: Optional[str] = DB_OPTION):
    """Table of devices: name, kind, state, last seen, current job (from the database only)."""
    if ctx.invoked_subcommand is not None:
        return
    from farm.readers import device_table
    from farm.console import devices_table
    out.print(devices_table(device_table(inventory, db)))


@devices_app.command("check")
@boundary
def devices_check(ctx: typer.Context,
                  names: Optional[list[str]] = typer.Argument(None, metavar="DEVICE...",
                                                              help="Devices (default: all)."),
                  inventory: Optional[Path] = OWN_INVENTORY_OPTION):
    """Reach each device and read what it offers: host key, login, python, torch, transformers,
    free memory, power mode, clocks, tegrastats, cgroup."""
    from farm.api import check_devices
    from farm.console import checks_table
    from farm.devices.health import FAIL

    with err.status("checking devices..."):
        results = check_devices(_or_group(ctx, "inventory", inventory), names)
    for name, checks in results.items():
        out.print(checks_table(name, checks))
    failing = [n for n, checks in results.items() if any(c.status == FAIL for c in checks)]
    if failing:
        err.print(f"[bold red]not ready:[/] {shown(', '.join(failing))}", highlight=False)
        raise typer.Exit(DeviceError.exit_code)


@devices_app.command("trust")
@boundary
def devices_trust(ctx: typer.Context,
                  name: str = typer.Argument(..., metavar="DEVICE", help="The device (one "
                                             "reached over SSH, e.g. kind: jetson)."),
                  yes: bool = typer.Option(False, "--yes", "-y", help="Pin without asking."),
                  inventory: Optional[Path] = OWN_INVENTORY_OPTION):
    """Show the board's host key fingerprint, and pin it after a yes."""
    from farm.api import host_key, trust

    offer = host_key(_or_group(ctx, "inventory", inventory), name)
    who, address, known_hosts = shown(name), shown(offer.address), shown(offer.known_hosts)
    out.print(f"{who} at {address} presents {offer.key_type} key "
              f"[bold]{offer.fingerprint}[/]", highlight=False)
    if offer.state == "trusted":
        out.print(f"[green]already trusted[/] ({known_hosts})", highlight=False)
        return
    if offer.state == "changed":
        err.print(f"[bold red]warning: the host key CHANGED.[/] {known_hosts} pins "
                  f"{offer.pinned_fingerprint}. Pin the new key only if you know why it changed "
                  "(the board was reinstalled); otherwise someone may be in the middle.",
                  highlight=False)
    if not yes and not typer.confirm(f"Pin this key for {visible(name)} in "
                                     f"{visible(offer.known_hosts)}?"):
        err.print("nothing pinned")
        raise typer.Exit(1)
    trust(offer)
    out.print(f"[green]pinned[/] {offer.fingerprint} for {address} in {known_hosts}",
              highlight=False)


@devices_app.command("release")
@boundary
def devices_release(ctx: typer.Context,
                    name: str = typer.Argument(..., metavar="DEVICE", help="The device."),
                    inventory: Optional[Path] = OWN_INVENTORY_OPTION,
                    db: Optional[str] = OWN_DB_OPTION):
    """Return a quarantined device to service by hand (a sweep otherwise health-checks it)."""
    from farm.api import release_device

    if release_device(_or_group(ctx, "inventory", inventory), name, _or_group(ctx, "db", db)):
        out.print(f"[green]released[/] {shown(name)}: it takes jobs again", highlight=False)
    else:
        out.print(f"{shown(name)} was not quarantined", highlight=False)


sweeps_app = _App(no_args_is_help=True, help="The sweeps in the database.")


@sweeps_app.command("rm")
@boundary
def sweeps_rm(sweep: str = SWEEP_ARGUMENT,
              yes: bool = typer.Option(False, "--yes", "-y", help="Remove without asking."),
              db: Optional[str] = DB_OPTION):
    """Remove a sweep with its jobs, results, scores and attempts, in one transaction, so that
    its name is free for another sweep file. Refused while a farm run drives it."""
    from farm.api import remove_sweep

    if not yes and not typer.confirm(f"Remove sweep {visible(sweep)} and every result in it?"):
        err.print("nothing removed")
        raise typer.Exit(1)
    removed = remove_sweep(sweep, db)
    out.print(f"removed sweep {shown(sweep)} ({removed} jobs)", highlight=False)


exits_app = _App(no_args_is_help=True, help="Exit heads for early exit.")


@exits_app.command("fit")
@boundary
def exits_fit(checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT",
                                                help="A fine-tuned checkpoint folder."),
              task: str = typer.Option(..., "--task", "-t", metavar="TASK",
                                       help="Its GLUE task (sst2, mnli-m...)."),
              data_dir: Path = typer.Option(..., "--data-dir", "-d", metavar="DIR",
                                            help="The GLUE distribution (TASK/train.tsv and its "
                                            "dev file)."),
              out_dir: Optional[Path] = typer.Option(None, "--out", "-o", metavar="DIR",
                                                     help="Where to save (default: "
                                                     "CHECKPOINT-exits)."),
              epochs: int = typer.Option(3, "--epochs", min=1, metavar="N",
                                         help="Passes over train.tsv."),
              max_train: Optional[int] = typer.Option(None, "--max-train", min=1, metavar="N",
                                                      help="Use the first N train examples.")):
    """Fit one exit head per layer to a checkpoint that has none (DeeBERT's second stage: the
    backbone frozen), report each exit's dev accuracy, and save a checkpoint early_exit loads."""
    from farm.console import PhaseProgress
    from farm.exits import fit, table

    with PhaseProgress(out) as progress:
        report = fit(checkpoint, task, data_dir, out_dir, epochs=epochs, max_train=max_train,
                     progress=progress.update)
    out.print(table(report))
    out.print(f"wrote {shown(report.out_dir)}", highlight=False)
