"""The one declaration of a result: how a job ends, the figures stored with it, and the columns
of v_results. The results and model_loads tables (farm.store.schema), the insert
(farm.store.Store.job_finished) and the view (v_results_sql, migrations from 0008 on) follow
from it; tables and reports take their column labels from it.

    Status, Failure, FINAL      how a job ended (stored, sent as JSON and over Ray as bare words)
    RESULT_FIELDS, LOAD_FIELDS  the figures of a `results` row and of a `model_loads` row
    V_RESULTS                   v_results' columns in their order; v_results_sql(revision)
    result_row(result)          a `results` row's figures from an agent's result

Every field and column names `since`, the migration that added it. Columns are only ever added
(outside tools rely on the names): a new one gets a new migration and a later `since`, and so
lands at the end of the view.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum



class _Word(str, Enum):
    """A str that is its bare value wherever it goes: f-strings, str(), JSON, SQL."""
    __str__ = str.__str__
    __format__ = str.__format__


class Status(_Word):
    """How a job stands. A runner reports done, oom, failed, timeout or cancelled; queued and
    running are the controller's."""
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    OOM = "oom"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class Failure(_Word):
    """Why an attempt did not end done: the device or the way to it failed (the job may well
    succeed elsewhere or later), or the job itself did (model error, oom, timeout: final)."""
    INFRA = "infra"
    JOB = "job"


# A job in one of these is never run again (cancelled, queued and running ones are).
FINAL = (Status.DONE, Status.OOM, Status.FAILED, Status.TIMEOUT)


@dataclass(frozen=True)
class Field:
    """A figure stored in a table's column of the same name."""
    name: str
    type: str  # "int", "bigint", "float", "text" or "string(N)": its column's type (column())
    unit: str
    what: str
    since: str  # the migration that added the column
    json_of: str | None = None  # stored as JSON: this key of the agent's result
    method: bool = False  # a method's figure: from the result's method_fields
    label: str | None = None  # with one, also a v_results column as it is, under this heading

    def column(self):
        """Its SQLAlchemy column. SQLAlchemy is imported here, not with this module: a device's
        Ray worker reads results' names and statuses from it, and importing SQLAlchemy there
        took a third of a second of a core while the agents import torch."""
        from sqlalchemy import BigInteger, Column, Float, Integer, String, Text

        types = {"int": Integer(), "float": Float(), "text": Text(),
                 # Counts past 2**31 (a BERT-base pass is ~22 GFLOPs): PostgreSQL's INTEGER is
                 # 32 bits, SQLite's holds 64 (there BIGINT would only rename the type).
                 "bigint": Integer().with_variant(BigInteger(), "postgresql")}
        size = re.fullmatch(r"string\((\d+)\)", self.type)
        return Column(self.name, String(int(size[1])) if size else types[self.type],
                      nullable=True)


@dataclass(frozen=True)
class ViewColumn:
    """A column of v_results: its SQL over jobs j, sweeps s, results r and model_loads l."""
    name: str
    sql: str
    since: str
    label: str = ""  # its heading where tables show it to people (the name where empty)
    scale: float = 1.0  # tables show the value divided by this (the label names that unit)


_F, _I, _T, _BIG = "float", "int", "text", "bigint"
_METHOD_TYPES = {"int": _I, "float": _F, "text": _T}

# The migration that added each built-in method's figure as a column of results and v_results.
# A method that declares a new figure needs a migration that adds the column, and a line here.
METHOD_COLUMNS = {"heads_pruned": "0008", "factorized_layers": "0008",
                  "reconstruction_error": "0008"}
METHOD_COLUMNS.update((name, "0009") for name in (  # early_exit (agents/methods/early_exit.py)
    "exit_heads", "exit_layers", "exit_layer_mean", "exit_histogram", "exit_batch_layers_mean",
    "exit_expected_saving", "exit_speedup", "exit_example_ms", "exit_example_p50_ms",
    "exit_example_p90_ms", "exit_example_p99_ms", "exit_full_ms", "exit_flops_mean",
    "exit_bytes_mean"))
METHOD_COLUMNS.update((name, "0013") for name in (  # kronecker, prune_ffn, magnitude
    "layer_errors", "kronecker_shapes", "neurons_pruned", "sparsity", "kernel"))
EXTRA = "extra_json"  # figures of methods with no column ($FARM_METHODS), as JSON

_RESULT = (  # name, type, unit, what, since
    ("iters", _I, "calls", "timed forward calls", "0001"),
    ("window_s", _F, "s", "the timed window", "0001"),
    ("p50_ms", _F, "ms", "median latency of one call (one batch)", "0001"),
    ("p90_ms", _F, "ms", "90th percentile call latency", "0001"),
    ("p95_ms", _F, "ms", "95th percentile call latency", "0001"),
    ("p99_ms", _F, "ms", "99th percentile call latency", "0001"),
    ("mean_ms", _F, "ms", "mean call latency", "0001"),
    ("stdev_ms", _F, "ms", "standard deviation of the call latency", "0001"),
    ("min_ms", _F, "ms", "fastest call", "0001"),
    ("max_ms", _F, "ms", "slowest call", "0001"),
    ("per_sample_ms", _F, "ms", "mean call latency / batch size", "0001"),
    ("throughput", _F, "samples/s", "samples per second over the timed calls", "0001"),
    ("peak_mem_mb", _F, "MiB", "the container's peak, else the process's", "0001"),
    ("container_peak_mb", _F, "MiB", "the cgroup's peak during the job", "0001"),
    ("process_peak_mb", _F, "MiB", "the agent's VmHWM", "0001"),
    ("memory_limit_mb", _F, "MiB", "the container's memory limit", "0001"),
    ("flops", _BIG, "FLOPs", "one sample's forward pass", "0001"),
    ("params", _BIG, "", "parameter count", "0001"),
    ("energy_mj", _F, "mJ", "energy per sample over the timed window", "0001"),
    ("metric", "string(32)", "", "the task's main metric (all of them: table metrics)", "0001"),
    ("score", _F, "", "the main metric's value", "0001"),
    ("cuda_peak_mb", _F, "MiB", "torch.cuda.max_memory_allocated during the job", "0002"),
    ("job_s", _F, "s", "the agent's busy time for the job", "0002"),
    ("flops_method", "string(32)", "", "torch.utils.flop_counter or analytic", "0002"),
    ("avg_power_mw", _F, "mW", "mean power over the timed window", "0002"),
    ("idle_power_mw", _F, "mW", "power read just before the window", "0002"),
    ("energy_source", "string(32)", "", "where power came from (tegrastats, RAPL)", "0002"),
    ("board_ram_peak_mb", _F, "MiB", "tegrastats' RAM used", "0002"),
    ("score_note", _T, "", "why there is no score, or a caveat on it", "0005"),
    ("eval_examples", _I, "examples", "examples predicted and scored", "0005"),
    ("eval_s", _F, "s", "the evaluation pass", "0005"),
    ("tokens_mean", _F, "tokens", "real tokens per example in the timed batches", "0005"),
    ("tokenizer", "string(64)", "", "how task texts became ids", "0005"),
    ("baseline_mb", _F, "MiB", "the agent idle, no model (VmRSS)", "0007"),
    ("storage_read_bytes", _F, "bytes", "fetched from storage per forward pass", "0007"),
    ("bytes_read", _F, "bytes", "layer bytes loaded per pass (streamed)", "0007"),
    ("read_ms", _F, "ms", "time reading layers per pass, any thread (streamed)", "0007"),
    ("read_wait_ms", _F, "ms", "time a pass waited for layers (streamed)", "0007"),
    ("container_peak_method", "string(16)", "", "how container_peak_mb was taken: reset, "
                                                "fresh or sampled (farm.cgroups.PEAK_METHODS)",
     "0010"),
    ("p50_low_ms", _F, "ms", "p50's 95% interval, low end (order statistics)", "0011"),
    ("p50_high_ms", _F, "ms", "p50's 95% interval, high end", "0011"),
    ("p90_low_ms", _F, "ms", "p90's 95% interval, low end (order statistics)", "0011"),
    ("p90_high_ms", _F, "ms", "p90's 95% interval, high end", "0011"),
    ("p95_low_ms", _F, "ms", "p95's 95% interval, low end (order statistics)", "0011"),
    ("p95_high_ms", _F, "ms", "p95's 95% interval, high end", "0011"),
    ("p99_low_ms", _F, "ms", "p99's 95% interval, low end (order statistics)", "0011"),
    ("p99_high_ms", _F, "ms", "p99's 95% interval, high end", "0011"),
    ("percentile_note", _T, "", "why a percentile is NULL (too few calls for its interval)",
     "0011"),
    # 0012: how far the figures can be trusted (noise, other processes, clocks and heat) and
    # memory that does not depend on who faulted the page cache first. From here on a field
    # names its heading too and is a v_results column as it is (r.<name>), declared only here.
    ("noise", _F, "", "interquartile range / median of the timed calls", "0012", "IQR/median"),
    ("noisy", _I, "", "1 when noise is above 0.10 (torch.utils.benchmark's warning)", "0012", ""),
    ("load_avg_1m", _F, "", "the host's 1-minute load average at the window's end", "0012",
     "load 1m"),
    ("outside_cpu_s", _F, "s", "CPU time other processes used on the agent's CPUs during the "
                               "window (/proc/stat less the agent's own)", "0012", "outside CPU s"),
    ("outside_cpu_share", _F, "", "outside_cpu_s / (window x the agent's CPUs)", "0012",
     "outside CPU"),
    ("host_busy", _I, "", "1 when outside_cpu_share is above 0.10", "0012", "busy host"),
    ("cpu_list", "string(64)", "", "the CPUs the agent could run on (a pinned device's cpuset)",
     "0012", "CPUs"),
    ("memory_mb", _F, "MiB", "the job's memory: the agent's peak resident set (VmHWM: what it "
                             "allocates and the file pages it maps), whoever faulted the page "
                             "cache first", "0012", "memory MiB"),
    ("anon_mb", _F, "MiB", "anonymous memory charged to the container at the job's end",
     "0012", "anon MiB"),
    ("kernel_mb", _F, "MiB", "kernel memory charged to the container at the job's end", "0012",
     "kernel MiB"),
    ("file_mb", _F, "MiB", "page cache charged to the container at the job's end (depends on "
                           "which cgroup read the files first)", "0012", "file MiB"),
    ("cpu_mhz_start", _F, "MHz", "CPU clock when the window began (mean of the agent's CPUs)",
     "0012", "CPU MHz start"),
    ("cpu_mhz_end", _F, "MHz", "CPU clock when the window ended", "0012", "CPU MHz end"),
    ("cpu_mhz_min", _F, "MHz", "lowest CPU clock read in the window", "0012", "CPU MHz min"),
    ("gpu_mhz_start", _F, "MHz", "GPU clock when the window began (tegrastats)", "0012",
     "GPU MHz start"),
    ("gpu_mhz_end", _F, "MHz", "GPU clock when the window ended", "0012", "GPU MHz end"),
    ("gpu_mhz_min", _F, "MHz", "lowest GPU clock read in the window", "0012", "GPU MHz min"),
    ("temp_c_start", _F, "C", "temperature when the window began", "0012", "temp C start"),
    ("temp_c_end", _F, "C", "temperature when the window ended", "0012", "temp C"),
    ("temp_c_max", _F, "C", "highest temperature read in the window", "0012", "temp C max"),
    ("throttled", _I, "", "1 when a clock fell more than 5% below its start in the window",
     "0012", ""),
    ("clock_source", "string(64)", "", "where clocks came from (tegrastats, cpufreq, cpuinfo)",
     "0012", "clocks from"),
    ("temp_source", "string(64)", "", "which sensor the temperature is (tegrastats CPU, a "
                                    "thermal zone's type)", "0012", "temp from"),
    # 0013: compression methods (agents/methods: kronecker, prune_ffn, magnitude)
    ("nonzero_params", _BIG, "", "parameters that are not zero (a masked model stores as "
                                 "many parameters as the dense one, fewer of them nonzero)",
     "0013", "nonzero params"),
)
_RESULT_JSON = (  # name, the agent result's key, what, since
    ("latencies_json", "latencies_ms", "every timed call, in ms", "0001"),
    ("env_json", "env", "what produced the result: python, torch, CPU, host ...", "0001"),
    ("logits_json", "logits", "the outputs of the first batch", "0007"),
    ("exits_json", "exits", "early exit, per example in file order: exit layer, latency ms, "
                            "full-depth latency ms, FLOPs, layer bytes read", "0009"),
)
_LOAD = (
    ("load_s", _F, "s", "import torch, build or load the model, count its FLOPs", "0002"),
    ("load_peak_mb", _F, "MiB", "the process peak (VmHWM) after loading", "0002"),
    ("load_container_peak_mb", _F, "MiB", "the container's peak after loading", "0002"),
    ("cuda_load_peak_mb", _F, "MiB", "the CUDA peak after loading", "0002"),
    ("params", _BIG, "", "parameter count", "0002"),
    ("agent", "string(32)", "", "the agent's content hash", "0002"),
    ("baseline_mb", _F, "MiB", "the agent idle: torch imported, no model", "0007"),
    ("layer_store", "string(32)", "", "streamed: the layer store's hash", "0007"),
    ("layer_store_bytes", _BIG, "bytes", "streamed: the layer store's size", "0007"),
    ("layer_store_prepare_s", _F, "s", "streamed: making the store (NULL: cached)", "0007"),
    ("load_container_peak_method", "string(16)", "", "how load_container_peak_mb was taken",
     "0010"),
)
_VIEW = (  # name, SQL, since, label
    ("sweep", "s.name", "0001", ""), ("job_key", "j.key", "0001", "job"),
    ("device", "j.device", "0001", ""), ("target", "j.target", "0001", ""),
    ("model", "j.model", "0001", ""), ("variant", "j.variant", "0001", ""),
    ("task", "j.task", "0001", ""), ("batch_size", "j.batch_size", "0001", "batch"),
    ("seq_len", "j.seq_len", "0001", "seq"), ("status", "j.status", "0001", ""),
    ("error", "j.error", "0001", ""), ("attempts", "j.attempts", "0001", ""),
    ("started_at", "j.started_at", "0001", "started"),
    ("finished_at", "j.finished_at", "0001", "finished"),
    ("p50_ms", "r.p50_ms", "0001", "p50 ms"), ("p90_ms", "r.p90_ms", "0001", "p90 ms"),
    ("p95_ms", "r.p95_ms", "0001", "p95 ms"), ("p99_ms", "r.p99_ms", "0001", "p99 ms"),
    ("mean_ms", "r.mean_ms", "0001", "mean ms"), ("stdev_ms", "r.stdev_ms", "0001", "stdev ms"),
    ("iters", "r.iters", "0001", "calls"),
    ("per_sample_ms", "r.per_sample_ms", "0001", "ms/sample"),
    ("throughput", "r.throughput", "0001", "samples/s"),
    ("peak_mem_mb", "r.peak_mem_mb", "0001", "peak MiB"),
    ("container_peak_mb", "r.container_peak_mb", "0001", "container MiB"),
    ("process_peak_mb", "r.process_peak_mb", "0001", "process MiB"),
    ("memory_limit_mb", "r.memory_limit_mb", "0001", "limit MiB"),
    ("load_s", "l.load_s", "0001", "load s"),  # r.load_s until 0002 moved loads to model_loads
    ("flops", "r.flops", "0001", "GFLOP/sample", 1e9),
    ("params", "r.params", "0001", "params M", 1e6),
    ("energy_mj", "r.energy_mj", "0001", "mJ/sample"),
    ("metric", "r.metric", "0001", ""), ("score", "r.score", "0001", ""),
    ("cuda_peak_mb", "r.cuda_peak_mb", "0002", "CUDA MiB"),
    ("load_id", "r.load_id", "0002", "load"),
    ("load_peak_mb", "l.load_peak_mb", "0002", "load MiB"),
    ("load_container_peak_mb", "l.load_container_peak_mb", "0002", "load container MiB"),
    ("flops_method", "r.flops_method", "0002", "FLOPs by"),
    ("avg_power_mw", "r.avg_power_mw", "0002", "mW"),
    ("idle_power_mw", "r.idle_power_mw", "0002", "idle mW"),
    ("energy_source", "r.energy_source", "0002", "power from"),
    ("board_ram_peak_mb", "r.board_ram_peak_mb", "0002", "board RAM MiB"),
    ("job_s", "r.job_s", "0002", "job s"), ("window_s", "r.window_s", "0002", "window s"),
    ("failure", "j.failure", "0003", "class"),
    ("score_note", "r.score_note", "0005", "score note"),
    ("eval_examples", "r.eval_examples", "0005", "examples"),
    ("eval_s", "r.eval_s", "0005", "eval s"),
    ("tokens_mean", "r.tokens_mean", "0005", "tokens"),
    ("tokenizer", "r.tokenizer", "0005", ""),
    ("baseline_mb", "r.baseline_mb", "0007", "idle MiB"),
    ("model_memory_mb", "r.process_peak_mb - r.baseline_mb", "0007", "model MiB"),
    ("bytes_read", "r.bytes_read", "0007", "MB/pass", 1e6),
    ("storage_read_bytes", "r.storage_read_bytes", "0007", "storage MB/pass", 1e6),
    ("read_ms", "r.read_ms", "0007", "read ms"), ("read_wait_ms", "r.read_wait_ms", "0007",
                                                  "wait ms"),
    ("compute_ms", "r.mean_ms - r.read_wait_ms", "0007", "compute ms"),
    ("logits_json", "r.logits_json", "0007", "logits"),
    ("container_peak_method", "r.container_peak_method", "0010", "container peak by"),
    ("load_container_peak_method", "l.load_container_peak_method", "0010", "load peak by"),
    ("p50_low_ms", "r.p50_low_ms", "0011", "p50 low"),
    ("p50_high_ms", "r.p50_high_ms", "0011", "p50 high"),
    ("p90_low_ms", "r.p90_low_ms", "0011", "p90 low"),
    ("p90_high_ms", "r.p90_high_ms", "0011", "p90 high"),
    ("p95_low_ms", "r.p95_low_ms", "0011", "p95 low"),
    ("p95_high_ms", "r.p95_high_ms", "0011", "p95 high"),
    ("p99_low_ms", "r.p99_low_ms", "0011", "p99 low"),
    ("p99_high_ms", "r.p99_high_ms", "0011", "p99 high"),
    ("percentile_note", "r.percentile_note", "0011", "percentile note"),
    ("repeat", "j.repeat", "0012", ""),
    ("headroom_mb", "r.memory_limit_mb - r.memory_mb", "0012", "headroom MiB"),
)
V_RESULTS_FROM = """FROM jobs j
JOIN sweeps s ON s.id = j.sweep_id
LEFT JOIN results r ON r.job_id = j.id
LEFT JOIN model_loads l ON l.id = r.load_id
"""


def _method_fields() -> tuple[Field, ...]:
    """The built-in methods' figures that have a column (tests/test_results.py fails for one
    that has none); any other stays in extra_json."""
    from agents.methods import result_fields

    return tuple(Field(name, _METHOD_TYPES[kind], unit, what, METHOD_COLUMNS[name], method=True)
                 for name, kind, unit, what in result_fields() if name in METHOD_COLUMNS)


def _by_since(items):
    return tuple(sorted(items, key=lambda item: item.since))  # stable: declared order within one


METHOD_FIELDS = _method_fields()
RESULT_FIELDS: tuple[Field, ...] = _by_since(
    [Field(*f[:5], label=f[5] if len(f) > 5 else None) for f in _RESULT]
    + [Field(name, _T, "", what, since, json_of=key) for name, key, what, since in _RESULT_JSON]
    + list(METHOD_FIELDS)
    + [Field(EXTRA, _T, "", "figures of methods without a column, by name", "0008")])
LOAD_FIELDS: tuple[Field, ...] = tuple(Field(*f) for f in _LOAD)
V_RESULTS: tuple[ViewColumn, ...] = _by_since(
    [ViewColumn(*c) for c in _VIEW]
    + [ViewColumn(f.name, f"r.{f.name}", f.since, f.label) for f in RESULT_FIELDS
       if f.label is not None]
    + [ViewColumn(f.name, f"r.{f.name}", f.since) for f in METHOD_FIELDS]
    + [ViewColumn(EXTRA, f"r.{EXTRA}", "0008", "extra"),
       ViewColumn("variant_spec", "j.variant_spec", "0008", "variant spec"),
       ViewColumn("exits_json", "r.exits_json", "0009", "exits")])
_VIEW_BY_NAME = {c.name: c for c in V_RESULTS}
# Plain figures: a result with any of them measured gets a results row.
_MEASURED = tuple(f.name for f in RESULT_FIELDS if not (f.json_of or f.method or f.name == EXTRA))


def label(column: str) -> str:
    """A v_results column's heading for people."""
    found = _VIEW_BY_NAME.get(column)
    return found.label or column if found else column


def v_results_sql(revision: str) -> str:
    """CREATE VIEW v_results as of a migration: the columns added up to it, in order."""
    if revision < "0002":
        raise ValueError("v_results before 0002 read results.load_s: see migration 0001")
    columns = ",\n       ".join(f"{c.sql} AS {c.name}" for c in V_RESULTS if c.since <= revision)
    return f"\nCREATE VIEW v_results AS\nSELECT {columns}\n{V_RESULTS_FROM}"


def job_memory(row: dict) -> float | None:
    """A result's memory as every table and chart shows it: the job's own resident peak
    (`memory_mb`, 0012 on: the same whichever cgroup read the page cache first), else the
    container's peak (results from before it, and oom jobs, which end at their limit)."""
    own = row.get("memory_mb")
    return own if own is not None else row.get("peak_mem_mb")


def measured(result: dict) -> bool:
    """Whether an agent's result holds any figure (else no results row is stored)."""
    return any(result.get(name) is not None for name in _MEASURED)


def result_row(result: dict) -> dict:
    """A results row's figures from an agent's result: figures as they are, JSON ones encoded,
    methods' figures into their columns and any without a column into extra_json."""
    others = dict(result.get("method_fields") or {})
    row = {}
    for field in RESULT_FIELDS:
        if field.json_of:
            value = result.get(field.json_of)
            row[field.name] = None if value is None else json.dumps(value, sort_keys=True)
        elif field.method:
            row[field.name] = others.pop(field.name, None)
        elif field.name != EXTRA:
            row[field.name] = result.get(field.name)
    row[EXTRA] = json.dumps(others, sort_keys=True) if others else None
    return row


def load_row(load: dict) -> dict:
    """A model_loads row's figures from the load an agent reported."""
    return {field.name: load.get(field.name) for field in LOAD_FIELDS}
