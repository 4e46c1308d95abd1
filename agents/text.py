"""Real task inputs: texts (one or two per example) turned into a job's batches.

Every batch is padded to the job's seq_len, so that the latency measured on task inputs is that
of the shape the sweep names; longer examples are truncated to it. A checkpoint brings its own
tokenizer. A catalog model has none (and no trained weights to read text with): its inputs are
the examples' words hashed into its vocabulary, which gives the real lengths and attention masks.
"""
import inspect
import zlib

FIRST_WORD_ID = 1000  # hashed words stay clear of the low ids, where vocabularies keep specials


def open_tokenizer(model_spec):
    """The checkpoint's own tokenizer, or None for a catalog model."""
    source = model_spec.get("path") or model_spec.get("hub")
    if not source:
        return None
    from transformers import AutoTokenizer

    local = {} if model_spec.get("path") else {"local_files_only": True}
    try:
        return AutoTokenizer.from_pretrained(source, **local)
    except Exception as fast_error:  # an older tokenizers library may not read tokenizer.json
        try:
            return AutoTokenizer.from_pretrained(source, use_fast=False, **local)
        except Exception:
            raise fast_error


def describe(tokenizer):
    if tokenizer is None:
        return "hashed words (a catalog model has no tokenizer)"
    return "checkpoint (%s)" % type(tokenizer).__name__


def encode(texts, seq_len, model, tokenizer, device="cpu"):
    """Tensors for a batch of examples, padded and truncated to seq_len."""
    import torch

    accepted = inspect.signature(model.forward).parameters
    if tokenizer is not None:
        firsts = [t[0] for t in texts]
        seconds = [t[1] for t in texts] if len(texts[0]) > 1 else None
        batch = tokenizer(firsts, seconds, truncation=True, max_length=seq_len,
                          padding="max_length", return_tensors="pt")
        tensors = dict(batch)
    else:
        tensors = _hashed(texts, seq_len, model.config)
    if "token_type_ids" in tensors and "token_type_ids" in accepted:
        limit = int(getattr(model.config, "type_vocab_size", 2) or 1)
        tensors["token_type_ids"] = tensors["token_type_ids"].clamp(max=limit - 1)
    return {name: torch.as_tensor(value).to(device)
            for name, value in tensors.items() if name in accepted}


def _hashed(texts, seq_len, config):
    import torch

    vocab = int(config.vocab_size)
    base = FIRST_WORD_ID if vocab > 2 * FIRST_WORD_ID else 5
    span = max(1, vocab - base)
    pad = int(getattr(config, "pad_token_id", 0) or 0)
    ids = torch.full((len(texts), seq_len), pad, dtype=torch.long)
    mask = torch.zeros((len(texts), seq_len), dtype=torch.long)
    types = torch.zeros((len(texts), seq_len), dtype=torch.long)
    for row, example in enumerate(texts):
        segments = [[base + zlib.crc32(w.lower().encode("utf-8")) % span for w in t.split()]
                    for t in example]
        budget = max(0, seq_len - 1 - len(segments))  # one opening and one closing token each
        while sum(len(s) for s in segments) > budget:  # trim the longest first, as tokenizers do
            max(segments, key=len).pop()
        tokens, kinds = [base - 1], [0]
        for kind, segment in enumerate(segments):
            tokens += segment + [base - 2]
            kinds += [kind] * (len(segment) + 1)
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
        types[row, :len(kinds)] = torch.tensor(kinds)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def cycled(texts, batch_size, count):
    """`count` batches of exactly batch_size examples, taken in order and wrapping around."""
    n = len(texts)
    return [[texts[(b * batch_size + i) % n] for i in range(batch_size)] for b in range(count)]
