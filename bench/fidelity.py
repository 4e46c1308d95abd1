"""Does farm report what the model costs? For each case, farm's reported p50 against a careful bare
timing loop of the same model in the same container shape (1 CPU, 2 GiB, pinned to the same
core; its own process, one thread), batch 1, seq 128. 1.0 means farm's figure is the model's cost
and nothing else.

Cases (--cases, default all): fp32, int8 and stream on synthetic ids, and fp32 on a GLUE task's
real batches (sst2). Both sides stay loaded for the whole run, farm's as its device runner (the
agent in its cgroup, what a sweep runs each job through) and the bare loop as a process that
times a batch of calls when asked, so that the two can take turns within seconds: this shared
host's speed drifts by up to a quarter over a minute (bench/interference.py's quiet rounds),
which a minute between the two sides would put in the ratio. The cases' order turns round by
round, and within a case farm and the bare loop take turns at going first; the table gives
medians over the rounds of each side's p50 and of the per-round ratios.
Run as root (cgroups): .venv/bin/python bench/fidelity.py [--rounds 8 --model bert-base]
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from common import Paragraphs, rotations, run_on

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO / "tests"))  # the tests' GLUE helpers, after everything else
import glue_checkpoints  # noqa: E402
import glue_files  # noqa: E402
from agents.catalog import CATALOG, CATALOG_SEED, NUM_LABELS, SYNTHETIC  # noqa: E402
from agents.methods import Variant  # noqa: E402
from agents.serve import TIMING_BATCHES  # noqa: E402
from farm import layerstore  # noqa: E402
from farm.cgroups import open_container  # noqa: E402
from farm.devices.kinds.cgroup import CgroupDevice, cgroup_runner  # noqa: E402
from farm.sweep import Sweep, expand, read_data  # noqa: E402

MEMORY, CPUS, WARMUP, ITERS, BATCH, SEQ = 2 * 2**30, 1, 5, 30, 1, 128
TASK = "sst2"
BOUNDS = (0.95, 1.05)  # what the README promises of every round's ratio

# -- the bare loops: plain torch and transformers (the streamed model excepted: it is farm's own
# agent code, as nothing else streams layers), timed with perf_counter and nothing more. A loop
# is PRELUDE, its case's setup (which makes `model` and `turns`, an iterator of inputs), LOOP.
PRELUDE = """
import inspect, itertools, json, statistics, sys, time
import torch
s = json.loads(sys.argv[1])
torch.set_num_threads(s["threads"])
"""
CATALOG_MODEL = """
from transformers import AutoConfig, AutoModelForSequenceClassification
config = AutoConfig.for_model(s["type"], num_labels=s["labels"], **s["config"])
torch.manual_seed(s["seed"])  # the catalog's seed: the weights farm's agent draws
model = AutoModelForSequenceClassification.from_config(config).eval()
"""
QUANTIZED = """
model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
"""
STREAMED = """
from agents import stream  # opened as farm's agent opens a `stream` variant (serve.Agent.load)
model = stream.open_model(s["store"], False, ())
"""
SYNTHETIC_IDS = """
shape = (s["batch"], s["seq"])
inputs = {"input_ids": torch.randint(0, model.config.vocab_size, shape),
          "attention_mask": torch.ones(shape, dtype=torch.long),
          "token_type_ids": torch.zeros(shape, dtype=torch.long)}
accepted = inspect.signature(model.forward).parameters  # DistilBERT takes no token types
turns = itertools.repeat({k: v for k, v in inputs.items() if k in accepted})
"""
CHECKPOINT = """
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model = AutoModelForSequenceClassification.from_pretrained(s["path"]).eval()
tokenizer = AutoTokenizer.from_pretrained(s["path"])
"""
# As farm's agent makes them (serve.Agent._task_batches, text.encode): the examples in order,
# `batch` at a time, wrapping around, at most timing_batches batches, each padded and truncated
# to seq; the calls cycle through them, warm-up included.
TASK_BATCHES = """
accepted = inspect.signature(model.forward).parameters
texts, batch = s["texts"], s["batch"]
def encode(chunk):
    seconds = [t[1] for t in chunk] if len(chunk[0]) > 1 else None
    tensors = dict(tokenizer([t[0] for t in chunk], seconds, truncation=True,
                             max_length=s["seq"], padding="max_length", return_tensors="pt"))
    if "token_type_ids" in tensors:
        limit = int(getattr(model.config, "type_vocab_size", 2) or 1)
        tensors["token_type_ids"] = tensors["token_type_ids"].clamp(max=limit - 1)
    return {k: v for k, v in tensors.items() if k in accepted}
count = max(1, min(s["timing_batches"], -(-len(texts) // batch)))
turns = itertools.cycle([encode([texts[(b * batch + i) % len(texts)] for i in range(batch)])
                         for b in range(count)])
"""
# Each line on stdin asks for one measurement, as farm's agent makes one per job: warm-up
# calls, then the timed calls; the answer is their median in ms. After each, the heap is handed
# back as farm's agent hands it back after every job (so that the next job's memory figure starts
# from live memory: agents/measure.py release_memory), unless s["keep_heap"]: that re-layout
# alone puts int8 bert-base in a fast (~77 ms) or a slow (~103 ms) mode, job by job, here.
LOOP = """
import ctypes, gc
print("ready", flush=True)
with torch.inference_mode():
    for _ in sys.stdin:
        for _ in range(s["warmup"]):
            model(**next(turns))
        times = []
        for _ in range(s["iters"]):
            inputs = next(turns)
            started = time.perf_counter()
            model(**inputs)
            times.append(time.perf_counter() - started)
        print(statistics.median(times) * 1000, flush=True)
        if not s["keep_heap"]:
            gc.collect(1)
            ctypes.CDLL("libc.so.6").malloc_trim(0)
"""


@dataclass(frozen=True)
class Case:
    """One comparison: what farm is asked to measure (a variant on a task), and the setup of
    the bare loop that times the same calls without farm."""
    name: str
    variant: str
    setup: str
    task: str = SYNTHETIC

    @property
    def label(self) -> str:
        return f"{self.variant} {self.task}"

    @property
    def streamed(self) -> bool:
        return Variant.parse(self.variant).streamed


CASES = {case.name: case for case in (
    Case("fp32", "fp32", CATALOG_MODEL + SYNTHETIC_IDS),
    Case("int8", "int8", CATALOG_MODEL + QUANTIZED + SYNTHETIC_IDS),
    Case("stream", "stream", STREAMED + SYNTHETIC_IDS),
    Case(TASK, "fp32", CHECKPOINT + TASK_BATCHES, task=TASK),
)}


@dataclass(frozen=True)
class Bench:
    """What one run's measurements share: the scratch folder, the core that farm's device and
    the bare loops' container are pinned to, the model, and what the cases need made first."""
    folder: Path
    tag: str
    core: int
    model: str
    stores: dict  # case name -> its layer store's folder (streamed cases)
    checkpoint: Path | None  # the task cases' model, with a tokenizer
    texts: list  # the task's examples, in file order
    keep_heap: bool = False  # the bare loop never hands its heap back between measurements

    def settings(self, case: Case) -> dict:
        """What the case's bare loop is told (json, its one argument)."""
        entry = CATALOG[self.model]
        return {"threads": CPUS, "warmup": WARMUP, "iters": ITERS, "batch": BATCH, "seq": SEQ,
                "type": entry["type"], "config": entry["config"], "labels": NUM_LABELS,
                "seed": CATALOG_SEED, "store": self.stores.get(case.name),
                "path": self.checkpoint and str(self.checkpoint), "texts": self.texts,
                "timing_batches": TIMING_BATCHES, "keep_heap": self.keep_heap}

    def model_entry(self, case: Case):
        if case.task == SYNTHETIC:
            return self.model
        return {"name": f"{self.model}-{case.task}", "path": str(self.checkpoint)}


def prepare(folder: Path, model: str, core: int, cases: list[Case], keep_heap: bool) -> Bench:
    """The layer stores (made as farm's runner makes them, so the bare loop reads the same
    files) and the task's checkpoint and examples, before any timing."""
    stores = {case.name: layerstore.prepare({"name": model, "path": None},
                                            Variant.parse(case.variant)).folder
              for case in cases if case.streamed}
    checkpoint, texts = None, []
    if any(case.task != SYNTHETIC for case in cases):
        checkpoint, texts = make_task(folder, model)
    return Bench(folder, uuid.uuid4().hex[:6], core, model, stores, checkpoint, texts, keep_heap)


def make_task(folder: Path, model: str) -> tuple[Path, list]:
    """A checkpoint of the model's shape (random weights, saved as a fine-tuned one is) with the
    GLUE test helpers' WordPiece tokenizer, and a dev file of their toy sentences: one example
    per timing batch, so that every batch the timed calls cycle through is distinct."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    checkpoint, entry = folder / "checkpoint", CATALOG[model]
    glue_checkpoints._tokenizer(checkpoint).save_pretrained(str(checkpoint))
    config = AutoConfig.for_model(entry["type"], num_labels=NUM_LABELS, **entry["config"])
    torch.manual_seed(CATALOG_SEED)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(str(checkpoint))
    examples = glue_checkpoints.examples("single", TIMING_BATCHES * BATCH, seed=0)
    glue_files.write_dev_file(folder / "glue", TASK, examples)
    return checkpoint, [list(texts) for texts, _ in examples]


class FarmSide:
    """The case's job on a cgroup device pinned to the bench's core, through farm's device
    runner; its agent stays loaded between measurements, as it does between a group's jobs."""

    def __init__(self, bench: Bench, case: Case):
        device = CgroupDevice(name=f"fid-{bench.tag}-{case.name}", kind="cgroup", memory=MEMORY,
                              cpus=CPUS, cores=[bench.core])
        self.case, self.bench, self.job = case, bench, self._job(bench, case)
        self.runner = cgroup_runner(device)
        self.runner.prepare()

    @staticmethod
    def _job(bench: Bench, case: Case) -> dict:
        data = {"data_dir": str(bench.folder / "glue")} if case.task != SYNTHETIC else {}
        sweep = Sweep.model_validate(
            {"name": "fidelity", "models": [bench.model_entry(case)], "variants": [case.variant],
             "tasks": [case.task], **data, "batch_sizes": [BATCH], "seq_lens": [SEQ],
             "measure": {"warmup": WARMUP, "min_iters": ITERS, "min_seconds": 0}},
            context={"base_dir": str(bench.folder)})
        examples = read_data(sweep)
        job, = expand(sweep, ["*"], examples)
        spec = dict(job.runner_spec(), key=job.key)
        if case.task in examples:  # as the controller sends a task's examples
            spec["texts"] = [list(t) for t in examples[case.task].texts]
        return spec

    def p50(self) -> float:
        result = run_on(self.runner, self.job)
        self.outside = result.get("outside_cpu_share")  # other processes on its core, meanwhile
        if self.case.streamed and Path(self.bench.stores[self.case.name]).name != \
                result["load"]["layer_store"]:
            raise SystemExit(f"farm read layer store {result['load']['layer_store']}, the bare "
                             f"loop {self.bench.stores[self.case.name]}")
        return result["p50_ms"]

    def close(self) -> None:
        self.runner.close()


class BareSide:
    """The case's bare loop, its own process in a container of the same shape on the same core."""

    def __init__(self, bench: Bench, case: Case):
        self.container = open_container(f"fid-bare-{bench.tag}-{case.name}", MEMORY, CPUS,
                                        cores=(bench.core,))
        env = dict(os.environ, OMP_NUM_THREADS=str(CPUS), MKL_NUM_THREADS=str(CPUS),
                   TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        argv = [sys.executable, "-c", PRELUDE + case.setup + LOOP,
                json.dumps(bench.settings(case))]
        # Run from the repository: the streamed case imports farm's agents package.
        self.process = subprocess.Popen(self.container.join_command(argv), env=env, cwd=REPO,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.name = case.name
        self._answer()

    def _answer(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the bare {self.name} loop ended (exit {self.process.wait()})")
        return line.strip()

    def p50(self) -> float:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return float(self._answer())

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.container.remove()


def case_names(value: str) -> list[Case]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown case {', '.join(unknown) or value!r}: "
                                         f"use some of {','.join(CASES)}")
    return [CASES[name] for name in names]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=inspect.cleandoc(__doc__),
                                     formatter_class=Paragraphs)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--cases", type=case_names, default=list(CASES.values()),
                        help=f"comma-separated, some of {','.join(CASES)} (default: all)")
    parser.add_argument("--model", default="bert-base", choices=sorted(CATALOG),
                        help="a catalog model (the task case saves a checkpoint of its shape)")
    parser.add_argument("--core", type=int, default=max(os.sched_getaffinity(0)),
                        help="the CPU farm's device and the bare loops are pinned to "
                             "(default: this host's last)")
    parser.add_argument("--keep-heap", action="store_true",
                        help="the bare loop keeps its heap between measurements instead of "
                             "handing it back as farm's agent does after every job")
    return parser.parse_args()


def measure_pair(farm: FarmSide, bare: BareSide, round_: int) -> tuple[float, float]:
    """(farm's p50, the bare loop's), farm going first in even rounds, the bare loop in odd."""
    if round_ % 2 == 0:
        return farm.p50(), bare.p50()
    b = bare.p50()
    return farm.p50(), b


def main() -> None:
    args = arguments()
    farm: dict[str, list[float]] = {case.name: [] for case in args.cases}
    bare: dict[str, list[float]] = {case.name: [] for case in args.cases}
    sides: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory(prefix="farm-bench-fidelity-") as scratch:
        bench = prepare(Path(scratch), args.model, args.core, args.cases, args.keep_heap)
        try:
            for case in args.cases:
                sides[case.name] = (FarmSide(bench, case), BareSide(bench, case))
                measure_pair(*sides[case.name], 0)  # loads, first calls: not counted
            for round_, case in rotations(args.cases, args.rounds):
                f, b = measure_pair(*sides[case.name], round_)
                farm[case.name].append(f)
                bare[case.name].append(b)
                print(f"round {round_ + 1} {case.label}: farm p50 {f:.2f} ms, bare p50 "
                      f"{b:.2f} ms, ratio {f / b:.3f} (others on the core during farm's "
                      f"window: {sides[case.name][0].outside:.0%})", flush=True)
        finally:
            for pair in sides.values():
                for side in pair:
                    side.close()
    print_table(args, farm, bare)


def print_table(args, farm: dict, bare: dict) -> None:
    print(f"\n{args.model} b{BATCH} s{SEQ}, {CPUS} CPU, {MEMORY // 2**30} GiB, {WARMUP} warm-up "
          f"and {ITERS} timed calls; medians of {args.rounds} rounds; the bare loop "
          + ("keeps its heap" if args.keep_heap else "hands its heap back after each, as farm"))
    print(f"{'case':<18}{'farm p50 ms':>12}{'bare p50 ms':>12}  ratio (min–max)")
    outside = []
    for case in args.cases:
        ratios = [f / b for f, b in zip(farm[case.name], bare[case.name])]
        outside += [case.name for r in ratios if not BOUNDS[0] <= r <= BOUNDS[1]]
        print(f"{case.label:<18}{statistics.median(farm[case.name]):12.2f}"
              f"{statistics.median(bare[case.name]):12.2f}  {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}–{max(ratios):.3f})")
    print(f"rounds with a ratio outside {BOUNDS[0]}–{BOUNDS[1]}: " + (
        "none" if not outside else ", ".join(f"{name} {outside.count(name)}/{args.rounds}"
                                             for name in dict.fromkeys(outside))))


if __name__ == "__main__":
    main()
