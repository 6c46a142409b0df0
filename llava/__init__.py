"""LLaVA-1.5 on transformers 5: model, loader, training and evaluation.

Importing the package is cheap; submodules import torch/transformers when used.
"""
