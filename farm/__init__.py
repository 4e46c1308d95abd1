"""farm: a benchmark farm for BERT-family models on small hardware."""
__version__ = "0.1.0"
