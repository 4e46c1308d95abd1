"""Built-in architectures: the public configurations of well-known checkpoints, built with random
weights. Latency, memory, FLOPs and parameter counts are those of the real model; accuracy is not
(random weights would score chance), so the agent never reports a score for these.
"""

NUM_LABELS = 2


def _bert(layers, hidden, heads, ffn):
    return {"type": "bert", "config": {
        "num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
        "intermediate_size": ffn, "vocab_size": 30522, "max_position_embeddings": 512}}


CATALOG = {
    "bert-base": _bert(12, 768, 12, 3072),
    "bert-large": _bert(24, 1024, 16, 4096),
    "bert-medium": _bert(8, 512, 8, 2048),
    "bert-small": _bert(4, 512, 8, 2048),
    "bert-mini": _bert(4, 256, 4, 1024),
    "bert-tiny": _bert(2, 128, 2, 512),
    "tinybert-4l": _bert(4, 312, 12, 1200),
    "distilbert-base": {"type": "distilbert", "config": {
        "n_layers": 6, "dim": 768, "n_heads": 12, "hidden_dim": 3072, "vocab_size": 30522}},
    "roberta-base": {"type": "roberta", "config": {
        "num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12,
        "intermediate_size": 3072, "vocab_size": 50265, "max_position_embeddings": 514,
        "type_vocab_size": 1, "pad_token_id": 1}},
    "albert-base-v2": {"type": "albert", "config": {
        "num_hidden_layers": 12, "num_hidden_groups": 1, "hidden_size": 768,
        "num_attention_heads": 12, "intermediate_size": 3072, "embedding_size": 128,
        "vocab_size": 30000, "hidden_act": "gelu_new"}},
    "mobilebert": {"type": "mobilebert", "config": {}},
    "electra-small": {"type": "electra", "config": {
        "num_hidden_layers": 12, "hidden_size": 256, "num_attention_heads": 4,
        "intermediate_size": 1024, "embedding_size": 128, "vocab_size": 30522}},
    "fnet-base": {"type": "fnet", "config": {
        "num_hidden_layers": 12, "hidden_size": 768, "intermediate_size": 3072,
        "vocab_size": 32000, "type_vocab_size": 4}},
}

# Catalog weights are random but seeded, so that every variant of a catalog model (eager,
# streamed, quantized) computes on the same weights and their logits can be compared.
CATALOG_SEED = 0

# Inputs the agent makes itself: random token ids of seq_len. Real task inputs (GLUE) are read by
# the controller and sent to the agent as texts.
SYNTHETIC = "synthetic"
