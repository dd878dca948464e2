"""Training stages: warm-up SFT with a difficulty curriculum (``sft``) and preference optimisation (``preference``)."""
