"""LoRA adapters: applied on the fly as merge inputs, merged into one adapter, extracted.

- `adapter.py`: reading PEFT adapters (``adapter_config.json`` parsed here; ``peft`` is not imported).
- `source.py`: a base model with an adapter applied per tensor, as a `TensorSource`.
- `inputs.py`, `merge.py`: several adapters into one, on the full per-module deltas.
- `extract.py`: a fine-tune into an adapter (truncated SVD of FT − BASE).
- `factorize.py`, `write.py`: truncated SVD into factors; writing a PEFT adapter directory.

Nothing here imports ``peft`` or ``transformers``.
"""
