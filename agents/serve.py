"""The agent's command loop.

Commands (one JSON object per line on stdin):
  {"op": "load", "model": {"name": ..., "path": ...}, "variant": "fp32", "threads": 1, "seq_lens": [128]}
  {"op": "run", "job": {"key": ..., "task": "synthetic", "batch_size": 1, "seq_len": 128,
                        "measure": {"warmup": 3, "min_iters": 10, "min_seconds": 1.0}}}
  {"op": "exit"}
Events (stdout): hello, loaded, phase, result, error. One model is loaded at a time and reused by
every job sent after it, so a (model, variant) group pays its load once.
"""
import os
import platform
import sys
import threading
import time
import traceback

from agents import content_hash
from agents import measure, models
from agents.protocol import Channel

_OOM_TEXT = ("can't allocate memory", "out of memory", "not enough memory")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except (IOError, OSError):
        pass
    return platform.processor() or None


def environment():
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "machine": platform.machine(), "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
    }


def _is_oom(error):
    return isinstance(error, MemoryError) or any(t in str(error).lower() for t in _OOM_TEXT)


class Agent(object):
    def __init__(self, channel):
        self.channel = channel
        self.model = None
        self.flops_by_seq = {}
        self.params = None

    def load(self, model_spec, variant, threads, seq_lens):
        started = time.perf_counter()
        import torch
        import transformers

        torch.set_num_threads(max(1, int(threads)))
        self.model = None
        fp32 = models.build(model_spec)
        self.params = models.parameter_count(fp32)
        # FLOPs are counted on the fp32 graph: int8 kernels do the same arithmetic, but the
        # counter does not see quantized ops.
        self.flops_by_seq = {}
        for seq_len in seq_lens:
            flops = measure.count_flops(fp32, models.synthetic_inputs(fp32, 1, seq_len))
            self.flops_by_seq[str(seq_len)] = flops
        self.model = models.apply_variant(fp32, variant)
        return {"event": "loaded", "load_s": time.perf_counter() - started, "params": self.params,
                "load_peak_mb": measure.process_peak_mb(), "torch": torch.__version__,
                "transformers": transformers.__version__, "threads": torch.get_num_threads()}

    def run(self, job):
        import torch

        key, batch, seq_len = job["key"], int(job["batch_size"]), int(job["seq_len"])
        settings = job["measure"]
        self.channel.emit("phase", job=key, phase="warmup")
        measure.reset_process_peak()
        inputs = models.synthetic_inputs(self.model, batch, seq_len)
        no_grad = getattr(torch, "inference_mode", torch.no_grad)
        with no_grad():
            latencies, window = measure.time_calls(
                lambda: self.model(**inputs), int(settings["warmup"]), int(settings["min_iters"]),
                float(settings["min_seconds"]),
                on_phase=lambda p: self.channel.emit("phase", job=key, phase=p))
        result = measure.summarize(latencies, batch, window)
        flops = self.flops_by_seq.get(str(seq_len))
        result.update(
            event="result", job=key, process_peak_mb=measure.process_peak_mb(),
            params=self.params, flops=flops, latencies_ms=[round(x * 1000.0, 6) for x in latencies])
        return result


def _exit_with_parent(parent_pid):
    """The controller's side may be killed outright; an orphaned agent must not keep a device busy."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)


def main():
    watchdog = threading.Thread(target=_exit_with_parent, args=(os.getppid(),))
    watchdog.daemon = True
    watchdog.start()
    channel = Channel()
    agent = Agent(channel)
    channel.emit("hello", agent=content_hash(), pid=os.getpid(), env=environment())
    for command in channel.commands():
        op, job_key = command.get("op"), (command.get("job") or {}).get("key")
        try:
            if op == "exit":
                break
            elif op == "load":
                reply = agent.load(command["model"], command["variant"],
                                   command.get("threads", 1), command.get("seq_lens", []))
            elif op == "run":
                reply = agent.run(command["job"])
            else:
                reply = {"event": "error", "job": job_key, "kind": "protocol",
                         "message": "unknown op %r" % op}
            # Hand freed heap back before answering: the controller resets the container's
            # peak right after, and the next job's figure must start from live memory only.
            measure.release_memory()
            channel.emit(reply.pop("event"), **reply)
        except Exception as error:  # every failure becomes an event; the loop goes on
            traceback.print_exc(file=sys.stderr)
            kind = "oom" if _is_oom(error) else "model"
            channel.emit("error", job=job_key, kind=kind,
                         message="%s: %s" % (type(error).__name__, error))
    channel.emit("bye")
