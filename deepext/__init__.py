"""deepext: a self-hosted platform for fine-tuning LLMs (SFT, LoRA, GRPO) on Ray."""

__version__ = "0.1.0"
