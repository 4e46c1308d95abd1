"""Precisions: the number format a variant's weights compute in, after its methods.

    fp32   the model as built
    fp16   half precision, on CUDA only (devices with `cuda: true`)
    int8   torch's dynamic quantization of every Linear (int8 weights, activations quantized per
           call), on the CPU only: torch has no CUDA kernels for it
"""

# name: (where it runs: "cuda", "cpu" or None for either; whether it streams (layer stores hold
# fp32 or int8 layers); relative cost on its device, for ordering the queue only)
PRECISIONS = {
    "fp32": (None, True, 1.0),
    "fp16": ("cuda", False, 1.0),
    "int8": ("cpu", True, 0.4),
}


def runs_on(precision):
    return PRECISIONS[precision][0]


def streams(precision):
    return PRECISIONS[precision][1]


def cost(precision):
    return PRECISIONS[precision][2]


def convert(model, precision, device="cpu"):
    """The fp32 model in `precision`, on its device."""
    import torch

    if precision == "fp16":
        return model.half().to(device)
    if precision == "int8":
        quantization = getattr(torch, "ao", torch).quantization
        return quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model.to(device)
