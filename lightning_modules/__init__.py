"""The model registry: experiment names in params.yaml map to these LightningModules."""

from lightning_modules.char_lm import CharLM

MODELS = {
    "char_lm": CharLM,
}
