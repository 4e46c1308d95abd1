"""The agent's command loop.

Commands (one JSON object per line on stdin):
  {"op": "load", "model": {"name": ..., "path": ...}, "variant": "fp32", "threads": 1,
   "seq_lens": [128], "cuda": false}
      a variant other than the named ones of earlier releases also carries "variant_spec":
      {"precision": ..., "execution": ..., "methods": [[name, params], ...]} (agents.methods)
  {"op": "run", "job": {"key": ..., "task": "synthetic", "batch_size": 1, "seq_len": 128,
                        "measure": {"warmup": 3, "min_iters": 10, "min_seconds": 1.0}}}
      a GLUE job also carries "texts": [[sentence], [sentence1, sentence2], ...] and "evaluate":
      the timed calls then run on batches of those texts, and with evaluate every example is
      predicted once after the timed window (the result's "predictions": output index, or the
      value of a one-output regression head).
  {"op": "exit"}
Events (stdout): hello, loaded, phase, result, error. One model is loaded at a time and reused by
every job sent after it, so a (model, variant) group pays its load once.
"""
import itertools
import os
import sys
import threading
import time
import traceback

from agents import content_hash
from agents import (conditions, energy, environment, exit_timing, flops, imports, measure,
                    methods, models, stream, text)
from agents.methods import precision
from agents.protocol import Channel

_OOM_TEXT = ("can't allocate memory", "out of memory", "not enough memory")
IDLE_S = 0.5  # idle power is read over this long before each timed window, where a meter exists
TIMING_BATCHES = 16  # distinct batches of task examples the timed calls cycle through
PROGRESS_S = 2.0  # how often an evaluation reports how far it is
_UNSET = object()


def _is_oom(error):
    return isinstance(error, MemoryError) or any(t in str(error).lower() for t in _OOM_TEXT)


class Agent(object):
    def __init__(self, channel):
        self.channel = channel
        self.model = None
        self.device = "cpu"
        self.flops_by_seq = {}
        self.params = None
        self.nonzero_params = None
        self.method_fields = {}  # what the variant's methods report (agents.methods FIELDS)
        self.meter = energy.open_meter()
        self.model_spec = None
        self.tokenizer = _UNSET  # opened by the first job with texts
        self.import_s = 0.0  # importing torch and transformers, not yet counted in a load_s


    def import_runtime(self):
        """Import torch and transformers as soon as the agent starts (a device's first agent
        starts while the sweep is still being prepared). Their time belongs to the first load
        (load_s: import, build, count), whenever they are imported."""
        if imports.imported():
            return
        with imports.turn():  # the wait for a turn is no one's
            started = time.perf_counter()
            import torch  # noqa: F401
            # transformers' own import is lazy: most of its time (3 of 6 s of a core here) is
            # the models' common code, which every model's class imports; in the turn too
            import transformers.modeling_utils  # noqa: F401
            self.import_s = time.perf_counter() - started

    def load(self, model_spec, variant, threads, seq_lens, cuda):
        self.import_runtime()
        started = time.perf_counter() - self.import_s
        import torch
        import transformers

        # The runtime's own footprint (torch, transformers and the model's code imported, no
        # weights): "model memory" is a job's peak above it.
        models.import_code(models.config_of(model_spec))
        torch.set_num_threads(max(1, int(threads)))
        self.model, self.model_spec, self.tokenizer = None, model_spec, _UNSET
        measure.release_memory()
        self.baseline_mb = measure.resident_mb()
        self.device = models.torch_device(variant, cuda)
        if variant.streamed:  # the store holds the layers as the methods left them
            self.model = stream.open_model(model_spec["store"], variant.prefetched,
                                           variant.methods)
            manifest = self.model.farm_stream.manifest
            self.params = manifest["params"]
            self.nonzero_params = manifest.get("nonzero_params")  # stores made before 0013: none
            self.method_fields = manifest.get("method_fields", {})
            self._count_flops(self.model, seq_lens)
        else:
            fp32 = models.build(model_spec)
            self.method_fields = methods.apply_methods(fp32, variant)
            self.params = models.parameter_count(fp32)
            self.nonzero_params = models.nonzero_count(fp32)
            # FLOPs are counted on the fp32 graph the methods left: int8 and fp16 kernels do
            # the same arithmetic.
            self._count_flops(fp32, seq_lens)
            self.model = precision.convert(fp32, variant.precision, self.device)
            del fp32
        self.import_s = 0.0  # counted once, by the agent's first load that ends
        return {"event": "loaded", "load_s": time.perf_counter() - started, "params": self.params,
                "baseline_mb": self.baseline_mb,
                "load_peak_mb": measure.process_peak_mb(), "threads": torch.get_num_threads(),
                "cuda_load_peak_mb": measure.cuda_peak_mb(self.device),
                "transformers": transformers.__version__, "torch_device": self.device,
                "env": environment.torch_facts(torch)}

    def _count_flops(self, model, seq_lens):
        self.flops_by_seq = {}
        for seq_len in seq_lens:
            count, method = flops.count(model, models.synthetic_inputs(model, 1, seq_len))
            self.flops_by_seq[str(seq_len)] = (count, method)

    def run(self, job):
        import torch

        if getattr(self.model, "farm_exits", None) is not None:  # its cost depends on the input
            if job.get("texts") and self.tokenizer is _UNSET:
                self.tokenizer = text.open_tokenizer(self.model_spec)
            return exit_timing.run(self, job)
        key, batch, seq_len, settings, texts, started = self.start_job(job)
        if texts:
            batches = self._task_batches(texts, batch, seq_len)
        else:
            batches = [models.synthetic_inputs(self.model, batch, seq_len, device=self.device)]
        turns = itertools.cycle(batches)
        call = measure.synchronized(lambda: self.model(**next(turns)), self.device)
        streamer = getattr(self.model, "farm_stream", None)
        no_grad = getattr(torch, "inference_mode", torch.no_grad)
        with no_grad():
            # The first warm-up call's logits are kept: variants of one model can be compared.
            logits = call()[0].float().tolist()
            measure.warm_up(call, int(settings["warmup"]) - 1)
            self.channel.emit("phase", job=key, phase="timing")

            def timed_window():
                if streamer is not None:
                    streamer.stats.reset()
                storage_before = measure.storage_read_bytes()
                watch = conditions.Window(self.meter).start()
                latencies, window = measure.time_calls(call, *measure.timed_window(settings))
                during = watch.stop()
                reads = _reads_per_pass(streamer, storage_before, len(latencies))
                return batch * len(latencies), window, (latencies, window, dict(reads, **during))

            (latencies, window, reads), power = energy.measure_window(
                self.meter, timed_window, IDLE_S)
            evaluation = self._predict(key, texts, batch, seq_len) if (
                texts and job.get("evaluate")) else {}
        result = measure.summarize(latencies, batch, window)
        result.update(power)
        result.update(evaluation)
        result.update(reads)
        if texts:
            masks = [b["attention_mask"] for b in batches if "attention_mask" in b]
            result.update(tokenizer=text.describe(self.tokenizer), tokens_mean=(
                float(sum(m.sum().item() for m in masks)) / sum(m.shape[0] for m in masks)
                if masks else None))
        count, method = self.flops_by_seq.get(str(seq_len), (None, None))
        result.update(
            event="result", job=key, process_peak_mb=measure.process_peak_mb(), logits=logits,
            baseline_mb=self.baseline_mb,
            cuda_peak_mb=measure.cuda_peak_mb(self.device), params=self.params, flops=count,
            nonzero_params=self.nonzero_params,
            method_fields=self.method_fields,
            flops_method=method, job_s=time.perf_counter() - started,
            latencies_ms=[round(x * 1000.0, 6) for x in latencies])
        return result

    def start_job(self, job):
        """(key, batch size, seq_len, measure settings, texts, start time) of a job, with the
        warm-up announced and the memory peaks reset: every kind of timing starts here."""
        key, batch, seq_len = job["key"], int(job["batch_size"]), int(job["seq_len"])
        started = time.perf_counter()
        self.channel.emit("phase", job=key, phase="warmup")
        measure.reset_process_peak()
        measure.reset_cuda_peak(self.device)
        return key, batch, seq_len, job["measure"], job.get("texts"), started

    def _task_batches(self, texts, batch, seq_len):
        """Batches of the task's own examples, for the timed calls to cycle through."""
        if self.tokenizer is _UNSET:
            self.tokenizer = text.open_tokenizer(self.model_spec)
        count = max(1, min(TIMING_BATCHES, (len(texts) + batch - 1) // batch))
        return [text.encode(chunk, seq_len, self.model, self.tokenizer, self.device)
                for chunk in text.cycled(texts, batch, count)]

    def _predict(self, key, texts, batch, seq_len):
        """Every example once, in order: the output index, or a regression head's value."""
        started = last = time.perf_counter()
        predictions = []
        for start in range(0, len(texts), batch):
            inputs = text.encode(texts[start:start + batch], seq_len, self.model,
                                 self.tokenizer, self.device)
            logits = self.model(**inputs)[0].float()
            if logits.shape[-1] == 1:
                predictions.extend(float(x) for x in logits[:, 0].tolist())
            else:
                predictions.extend(int(x) for x in logits.argmax(-1).tolist())
            if time.perf_counter() - last > PROGRESS_S:
                last = time.perf_counter()
                self.channel.emit("phase", job=key,
                                  phase="evaluating %d/%d" % (len(predictions), len(texts)))
        return {"predictions": predictions, "eval_examples": len(predictions),
                "eval_s": time.perf_counter() - started}

    def close(self):
        if self.meter is not None:
            self.meter.close()


def _reads_per_pass(streamer, storage_before, passes):
    """Per forward pass of the timed window: what the kernel fetched from storage, and for a
    streamed model the layer bytes loaded, the time spent reading them (on whichever thread)
    and the time the pass waited for them."""
    storage_after = measure.storage_read_bytes()
    reads = {"storage_read_bytes": (
        float(storage_after - storage_before) / passes
        if None not in (storage_before, storage_after) else None)}
    if streamer is not None:
        stats = streamer.stats
        reads.update(bytes_read=float(stats.bytes) / passes,
                     read_ms=stats.read_s * 1000.0 / passes,
                     read_wait_ms=stats.wait_s * 1000.0 / passes)
    return reads


def _exit_with_parent(parent_pid):
    """The controller's side may be killed outright; an orphaned agent must not keep a device busy."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)


def main():
    imports.leave_out_unused()
    watchdog = threading.Thread(target=_exit_with_parent, args=(os.getppid(),))
    watchdog.daemon = True
    watchdog.start()
    channel = Channel()
    agent = Agent(channel)
    channel.emit("hello", agent=content_hash(), pid=os.getpid(), env=environment.describe(),
                 energy_source=agent.meter.source if agent.meter else None)
    try:
        try:
            agent.import_runtime()
        except Exception:  # the first load imports them again, and its error event says why
            traceback.print_exc(file=sys.stderr)
        serve(channel, agent)
    finally:
        agent.close()
    channel.emit("bye")
    sys.stderr.flush()
    os._exit(0)  # everything is said; tearing down torch's modules only costs time


def serve(channel, agent):
    for command in channel.commands():
        op, job_key = command.get("op"), (command.get("job") or {}).get("key")
        try:
            if op == "exit":
                return
            elif op == "load":
                reply = agent.load(command["model"], methods.Variant.from_job(command),
                                   command.get("threads", 1), command.get("seq_lens", []),
                                   bool(command.get("cuda")))
            elif op == "run":
                reply = agent.run(command["job"])
            else:
                reply = {"event": "error", "job": job_key, "kind": "protocol",
                         "message": "unknown op %r" % op}
            # Hand freed heap back before answering: the controller resets the container's
            # peak right after, and the next job's figure must start from live memory only.
            measure.release_memory(thorough=(op == "load"))
            channel.emit(reply.pop("event"), **reply)
        except Exception as error:  # every failure becomes an event; the loop goes on
            traceback.print_exc(file=sys.stderr)
            kind = "oom" if _is_oom(error) else "model"
            channel.emit("error", job=job_key, kind=kind,
                         message="%s: %s" % (type(error).__name__, error))
