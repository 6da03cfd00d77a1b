"""Evaluation of a merge against its sources: perplexity, task probes, the comparison.

transformers is imported only when a model is loaded (`alloy.evaluate.models`).
"""
