"""LoRA adapters: applied on the fly as merge inputs, merged into one adapter, extracted.

- `adapter.py`: reading PEFT adapters (``adapter_config.json`` parsed here; ``peft`` is not imported).
- `source.py`: a base model with an adapter applied per tensor, as a `TensorSource`.
"""
