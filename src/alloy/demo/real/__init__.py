"""The real demo: LoRA adapters of SmolLM2-135M-Instruct, merged and measured (`alloy demo --real`)."""
