"""PEFT LoRA adapters as inputs: reading an adapter (`adapter`) and a base model with an
adapter applied on the fly, as a `TensorSource` (`source`)."""
