"""Timing a model with exits (agents/exits.py), whose cost depends on the input.

Every batch of examples (one example at batch size 1) is its own timed call, at its own length:
with padding: none a batch is padded to its longest example only, never to the job's seq_len
(padding: max_length pads to it, as the fixed-shape jobs do). After warm-up, rounds over all the
examples run until both the job's minimum call count and minimum duration are met; in each, every
batch is timed with early exit and with the same backbone at full depth, one right after the
other, in alternating order, so that both see the same examples, machine and moment. A batch
stops when every example in it has exited: an example's exit layer is where its prediction came
from, and the batch's layers run (exit_batch_layers_mean) may be more.

An example's latency is its call's (its batch's), the median over rounds; its FLOPs are counted
after the timed rounds by the analytic counter on the same pass (the layers it ran and every
exit head evaluated), and on a streamed model the layer bytes that pass read, each shared
equally by the examples of a batch.
"""
import json
import time

from agents import conditions, flops, measure, models, text
from agents.exits import Runner, histogram, mean, percentiles

FULL = {"policy": "full"}
SYNTHETIC_BATCHES = 16  # distinct random batches for a job without task examples


def run(agent, job):
    """The result of a job on agent.model, which carries exit heads (a job with texts: the
    agent has opened its tokenizer)."""
    import torch

    key, batch, seq_len, settings, texts, started = agent.start_job(job)
    runner = Runner(agent.model)
    batches = _batches(agent, texts, batch, seq_len, runner.params.get("padding") == "max_length")
    calls = {"exit": measure.synchronized(runner.run, agent.device),
             "full": measure.synchronized(lambda inputs: runner.run(inputs, FULL), agent.device)}
    no_grad = getattr(torch, "inference_mode", torch.no_grad)
    with no_grad():
        for i in range(int(settings["warmup"])):
            for name in ("exit", "full"):
                calls[name](batches[i % len(batches)])
        agent.channel.emit("phase", job=key, phase="timing")
        watch = conditions.Window(agent.meter).start()
        first, times, window = _timed_rounds(calls, batches, settings)
        during = watch.stop()
        spent = [_spent(agent.model, runner, inputs) for inputs in batches]
    result = _result(runner, batches, first, times, window, spent, batch)
    result.update(during)
    if texts and job.get("evaluate"):
        # No separate evaluation pass: the first timed round's exits are the predictions.
        result.update(predictions=_predictions(first), eval_examples=len(texts))
    if texts:
        result.update(tokenizer=text.describe(agent.tokenizer))
    result.update(
        event="result", job=key, process_peak_mb=measure.process_peak_mb(),
        logits=first[0][0].float().tolist(), baseline_mb=agent.baseline_mb,
        cuda_peak_mb=measure.cuda_peak_mb(agent.device), params=agent.params,
        nonzero_params=agent.nonzero_params,
        job_s=time.perf_counter() - started)
    result["method_fields"] = dict(agent.method_fields, **result.pop("method_fields"))
    return result


def _batches(agent, texts, batch, seq_len, padded):
    """The job's examples in order, batch by batch, each at its own length unless padded."""
    if not texts:
        return [models.synthetic_inputs(agent.model, batch, seq_len, seed=i, device=agent.device)
                for i in range(SYNTHETIC_BATCHES)]
    made = []
    for start in range(0, len(texts), batch):
        inputs = text.encode(texts[start:start + batch], seq_len, agent.model, agent.tokenizer,
                             agent.device)
        made.append(inputs if padded else own_length(inputs))
    return made


def own_length(inputs):
    """A batch cut to its longest example: the padding after it (on the right) goes."""
    mask = inputs.get("attention_mask")
    if mask is None:
        return inputs
    length = int(mask.sum(-1).max())
    return dict((name, tensor[:, :length]) for name, tensor in inputs.items())


def _timed_rounds(calls, batches, settings):
    """Rounds over every batch, each timed with exits and at full depth in alternating order,
    until both minimums are met: (the first round's exit outputs, {name: [[s, ...] per batch]},
    window s)."""
    clock = time.perf_counter
    times = {"exit": [[] for _ in batches], "full": [[] for _ in batches]}
    first, count, rounds = [None] * len(batches), 0, 0
    min_iters, min_seconds, max_seconds = measure.timed_window(settings)
    started = clock()
    while rounds == 0 or count < min_iters or clock() - started < min_seconds:
        if max_seconds is not None and clock() - started >= max_seconds:
            break
        for j, inputs in enumerate(batches):
            for name in (("exit", "full") if (j + rounds) % 2 == 0 else ("full", "exit")):
                t0 = clock()
                out = calls[name](inputs)
                times[name][j].append(clock() - t0)
                if name == "exit" and first[j] is None:
                    first[j] = out
            count += 1
        rounds += 1
    return first, times, clock() - started


def _spent(model, runner, inputs):
    """(FLOPs, layer bytes read or None) of one early-exit pass on `inputs`, untimed: a
    streamed model's prefetch of the layer after the exit is waited for and counted (it was
    read, though not used)."""
    streamer = getattr(model, "farm_stream", None)
    if streamer is not None:  # an earlier pass's prefetch, still reading, is not this one's
        streamer.end_pass(count=False)
    before = streamer.stats.bytes if streamer is not None else None
    counted = flops.analytic_call(model, lambda: runner.run(inputs))
    if streamer is None:
        return counted, None
    streamer.end_pass(count=False)
    return counted, streamer.stats.bytes - before


def _result(runner, batches, first, times, window, spent, batch):
    layers, ran, example_ms, full_ms, example_flops, tokens = [], [], [], [], [], []
    example_bytes = []
    for j, inputs in enumerate(batches):
        _, exited, batch_ran = first[j]
        rows = len(exited)
        ms = percentiles(times["exit"][j], [50])[0] * 1000.0
        full = percentiles(times["full"][j], [50])[0] * 1000.0
        layers.extend(exited)
        ran.append(batch_ran)
        example_ms.extend([ms] * rows)
        full_ms.extend([full] * rows)
        example_flops.extend([float(spent[j][0]) / rows] * rows)
        example_bytes.extend([None if spent[j][1] is None else float(spent[j][1]) / rows] * rows)
        mask = inputs.get("attention_mask")
        tokens.extend(mask.sum(-1).tolist() if mask is not None else
                      [inputs["input_ids"].shape[1]] * rows)
    depth = runner.layers
    p50, p90, p99 = percentiles(example_ms, [50, 90, 99])
    fields = {
        "exit_layer_mean": mean(layers), "exit_histogram": json.dumps(histogram(layers, depth)),
        "exit_batch_layers_mean": mean(ran), "exit_expected_saving": 1.0 - mean(layers) / depth,
        "exit_speedup": mean(full_ms) / mean(example_ms), "exit_example_ms": mean(example_ms),
        "exit_example_p50_ms": p50, "exit_example_p90_ms": p90, "exit_example_p99_ms": p99,
        "exit_full_ms": mean(full_ms), "exit_flops_mean": mean(example_flops),
        "exit_bytes_mean": None if None in example_bytes else mean(example_bytes)}
    latencies = [s for per_batch in times["exit"] for s in per_batch]
    result = measure.summarize(latencies, batch, window)
    # Batches differ in cost by design (their exits): the noise is each batch's own spread over
    # the rounds, the median over batches.
    spreads = sorted(x for x in (measure.noise(sorted(t)) for t in times["exit"])
                     if x is not None)
    median = measure.percentile(spreads, 50)
    result.update(noise=median, noisy=None if median is None else int(median > measure.NOISY))
    result.update(
        method_fields=fields, flops=int(round(mean(example_flops))), flops_method=flops.ANALYTIC,
        tokens_mean=mean(tokens), latencies_ms=[round(x * 1000.0, 6) for x in latencies],
        exits={"exit_layer": layers, "latency_ms": [round(x, 6) for x in example_ms],
               "full_ms": [round(x, 6) for x in full_ms],
               "flops": [int(round(x)) for x in example_flops],
               "bytes_read": [None if x is None else int(round(x)) for x in example_bytes]})
    return result


def _predictions(first):
    """Every example's prediction, from the layer it exited at: the output index, or a
    regression head's value."""
    predictions = []
    for logits, _, _ in first:
        logits = logits.float()
        if logits.shape[-1] == 1:
            predictions.extend(float(x) for x in logits[:, 0].tolist())
        else:
            predictions.extend(int(x) for x in logits.argmax(-1).tolist())
    return predictions
