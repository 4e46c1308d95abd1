"""Write the toy GLUE sample that examples/glue-baselines.yaml runs on.

It writes glue_data/ in the GLUE distribution's layout (CoLA, MNLI matched and mismatched, QNLI,
QQP: a few dozen dev lines each) and trains one tiny BERT per task into checkpoints/, in a few
seconds each on one core. Nothing is downloaded. The sentences are toy sentences whose answer
hangs on a marker word: the scores a sweep prints on them prove farm's GLUE pipeline end to end,
and say nothing about GLUE or about any real model (farm/glue/sample.py tells the tasks).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

HERE = Path(__file__).resolve().parent
SWEEP = HERE / "glue-baselines.yaml"


def arguments() -> argparse.Namespace:
    from farm.glue.sample import DEV_LINES, FAMILIES

    parser = argparse.ArgumentParser(description=" ".join(__doc__.split()))
    parser.add_argument("folder", nargs="?", type=Path, default=HERE / "glue-sample",
                        help="where to write glue_data/ and checkpoints/ (default: glue-sample/ "
                             "beside this script, where glue-baselines.yaml looks)")
    parser.add_argument("--lines", type=int, default=DEV_LINES,
                        help=f"dev examples per file (default: {DEV_LINES})")
    parser.add_argument("--tasks", default=",".join(FAMILIES),
                        help="which tasks, comma-separated (default: all: %(default)s)")
    parser.add_argument("--no-train", dest="train", action="store_false",
                        help="write the data only, no checkpoints")
    return parser.parse_args()


def write(steps, console: Console) -> None:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("", total=len(steps))
        for step in steps:
            progress.update(bar, description=step.what)
            started = time.monotonic()
            step.run()
            progress.console.print(f"[green]done[/] {step.what}  "
                                   f"[dim]{time.monotonic() - started:.1f} s[/]")
            progress.advance(bar)


def next_command(folder: Path) -> str:
    if folder.resolve() == (HERE / "glue-sample").resolve():
        return f"farm submit {_shown(SWEEP)} --inventory inventory.yaml"
    if folder.name == "glue-sample":
        return (f"copy {_shown(SWEEP)} into {_shown(folder.parent)} (it reads glue-sample/ "
                "beside itself), then farm submit the copy")
    return (f"farm submit a copy of {_shown(SWEEP)} whose data_dir: and paths: name "
            f"{_shown(folder)}")


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def main() -> None:
    args = arguments()
    console = Console()
    with console.status("loading torch and transformers"):
        from transformers.utils import logging

        from farm.glue.sample import plan
        logging.disable_progress_bar()  # its per-save bars would break the progress line
        try:
            steps = plan(args.folder, [t.strip() for t in args.tasks.split(",") if t.strip()],
                         lines=args.lines, train=args.train)
        except ValueError as error:
            raise SystemExit(f"glue_sample.py: {error}") from None
    write(steps, console)
    console.print(f"Wrote a toy GLUE sample to [bold]{_shown(args.folder)}[/] "
                  "(toy sentences: its scores prove the pipeline, not a model):")
    for step in steps:
        console.print(f"  {_shown(step.path)}", soft_wrap=True)
    console.print(f"\nNext: [bold]{next_command(args.folder)}[/]", soft_wrap=True)


if __name__ == "__main__":
    main()
