"""Helpers for the finetune-course notebooks: data, models, training, evaluation and more."""

__version__ = "0.1.0"
