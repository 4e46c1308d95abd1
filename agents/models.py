"""Building a model for a (model, variant) pair, and the inputs a job feeds it."""
import inspect

from agents import methods
from agents.catalog import CATALOG, CATALOG_SEED, NUM_LABELS


class ModelError(Exception):
    """A model, variant or device setting that cannot be built or run here."""


def build(model_spec):
    """An fp32 model in eval mode, from a catalog name (seeded random weights) or a local
    checkpoint."""
    import torch
    from transformers import AutoModelForSequenceClassification

    if model_spec.get("path") or model_spec.get("hub"):
        config = config_of(model_spec)
        if methods.restores(config):  # a checkpoint saved after a method changed its shapes
            return _restored(model_spec, config).eval()
        # hub: the local cache only, nothing is downloaded at run time
        source = model_spec.get("path") or model_spec["hub"]
        model = AutoModelForSequenceClassification.from_pretrained(
            source, local_files_only=not model_spec.get("path"))
        return model.eval()
    config = config_of(model_spec)
    torch.manual_seed(CATALOG_SEED)
    return AutoModelForSequenceClassification.from_config(config).eval()


def _restored(model_spec, config):
    """A checkpoint whose shapes a method changed (e.g. pruned heads, on a transformers that no
    longer prunes by itself): built from its config, shaped as the method left it, then its own
    weights loaded, every one of them."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(config)
    methods.restore(model, config)
    state = _checkpoint_state(model_spec)
    missing, unexpected = model.load_state_dict(state, strict=False)
    buffers = set(name for name, _ in model.named_buffers())
    missing = [name for name in missing if name not in buffers]
    if missing or unexpected:
        raise ModelError("checkpoint %s does not fit its own config: missing %s, unexpected %s"
                         % (model_spec.get("path") or model_spec.get("hub"), missing[:3],
                            unexpected[:3]))
    return model


def _checkpoint_state(model_spec):
    """The weights of a checkpoint folder (safetensors, else a torch file read as data only)."""
    import os

    import torch

    folder = model_spec.get("path")
    if not folder:
        from transformers.utils import cached_file
        folder = os.path.dirname(cached_file(model_spec["hub"], "config.json",
                                             local_files_only=True))
    safetensors = os.path.join(folder, "model.safetensors")
    if os.path.exists(safetensors):
        from safetensors.torch import load_file
        return load_file(safetensors)
    weights = os.path.join(folder, "pytorch_model.bin")
    if os.path.exists(weights):
        # Data only where this torch can refuse code in a pickle (1.13+).
        safe = {"weights_only": True} if "weights_only" in inspect.signature(
            torch.load).parameters else {}
        return torch.load(weights, map_location="cpu", **safe)
    raise ModelError("no model.safetensors or pytorch_model.bin in %s" % folder)


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
    """Where a variant (agents.methods.Variant) runs: on the GPU of a device that has one,
    unless its precision, execution or a method runs on the CPU only (int8's dynamic
    quantization, streaming); fp16 needs CUDA."""
    import torch

    if variant.cuda_only and not cuda:
        raise ModelError("%s runs on CUDA only, and this device has none" % variant.precision)
    if variant.cpu_only or not cuda:
        return "cpu"
    if not torch.cuda.is_available():
        raise ModelError("the inventory says this device has CUDA, but torch sees none")
    return "cuda"


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
    """The parameters the model stores (a masked weight's zeros count: they are stored)."""
    return sum(p.numel() for p in model.parameters())


def nonzero_count(model):
    """The parameters that are not zero (a magnitude mask's zeros do not count)."""
    import torch

    with torch.no_grad():
        return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))
