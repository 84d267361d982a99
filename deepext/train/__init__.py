"""Training orchestrator: SFT, GRPO and custom jobs as tracked Ray jobs (issue 4)."""
