"""Building a model for a (model, variant) pair, and the inputs a job feeds it."""
import inspect

from agents.catalog import CATALOG, CATALOG_SEED, NUM_LABELS, streamed


class ModelError(Exception):
    """A model, variant or device setting that cannot be built or run here."""


def build(model_spec):
    """An fp32 model in eval mode, from a catalog name (seeded random weights) or a local
    checkpoint."""
    import torch
    from transformers import AutoModelForSequenceClassification

    if model_spec.get("path"):
        model = AutoModelForSequenceClassification.from_pretrained(model_spec["path"])
        return model.eval()
    if model_spec.get("hub"):  # the local cache only: nothing is downloaded at run time
        model = AutoModelForSequenceClassification.from_pretrained(
            model_spec["hub"], local_files_only=True)
        return model.eval()
    config = config_of(model_spec)
    torch.manual_seed(CATALOG_SEED)
    return AutoModelForSequenceClassification.from_config(config).eval()


def config_of(model_spec):
    """The model's transformers configuration, without its weights."""
    from transformers import AutoConfig

    folder = model_spec.get("store") or model_spec.get("path")
    if folder:
        return AutoConfig.from_pretrained(folder)
    if model_spec.get("hub"):
        return AutoConfig.from_pretrained(model_spec["hub"], local_files_only=True)
    entry = CATALOG.get(model_spec["name"])
    if entry is None:
        raise ModelError("no catalog entry named %r" % model_spec["name"])
    return AutoConfig.for_model(entry["type"], num_labels=NUM_LABELS, **entry["config"])


def import_code(config):
    """Import the transformers class that builds `config`'s model: its code (over 100 MiB of
    imports in recent transformers) belongs to the runtime, not to the model's memory."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification._model_mapping[type(config)]


def torch_device(variant, cuda):
    """Where a variant runs: fp16 needs CUDA; int8 dynamic quantization exists on CPU only, and
    streaming is built for the CPU only; fp32 uses the GPU on a device that has one."""
    import torch

    if variant == "int8" or streamed(variant) or not cuda:
        if variant == "fp16":
            raise ModelError("fp16 runs on CUDA only, and this device has none")
        return "cpu"
    if not torch.cuda.is_available():
        raise ModelError("the inventory says this device has CUDA, but torch sees none")
    return "cuda"


def apply_variant(model, variant, device="cpu"):
    import torch

    if variant == "fp32":
        return model.to(device)
    if variant == "fp16":
        return model.half().to(device)
    if variant == "int8":
        quantization = getattr(torch, "ao", torch).quantization
        return quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    raise ModelError("unknown variant %r" % variant)


def synthetic_inputs(model, batch_size, seq_len, seed=0, device="cpu"):
    """Random token ids of exactly seq_len, full attention: the cost of a padded batch."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    accepted = inspect.signature(model.forward).parameters
    inputs = {"input_ids": torch.randint(0, vocab, (batch_size, seq_len), generator=generator)}
    if "attention_mask" in accepted:
        inputs["attention_mask"] = torch.ones(batch_size, seq_len, dtype=torch.long)
    if "token_type_ids" in accepted:
        inputs["token_type_ids"] = torch.zeros(batch_size, seq_len, dtype=torch.long)
    return {name: tensor.to(device) for name, tensor in inputs.items()}


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())
