"""The model registry: experiment names in params.yaml map to these LightningModules."""

from lightning_modules.char_lm import CharLM
from lightning_modules.classifier import DomainClassifier

MODELS = {
    "char_lm": CharLM,
    "classifier": DomainClassifier,
}
