"""The model registry: experiment names in params.yaml map to these LightningModules."""

from lightning_modules.recurrent.char_lm import CharLM
from lightning_modules.metrics.classifier import DomainClassifier
from lightning_modules.adversarial.cgan import ConditionalGAN
from lightning_modules.adversarial.cyclegan import CycleGAN
from lightning_modules.likelihood.diffusion import DDPM
from lightning_modules.recurrent.frame_labeller import FrameLabeller
from lightning_modules.adversarial.gan import GAN
from lightning_modules.likelihood.hvae import HierarchicalVAE
from lightning_modules.adversarial.pix2pix import Pix2Pix
from lightning_modules.recurrent.seq2seq import Seq2Seq
from lightning_modules.recurrent.sequence_classifier import SequenceClassifier
from lightning_modules.recurrent.tagger import Tagger
from lightning_modules.likelihood.vae import VAE

MODELS = {
    "char_lm": CharLM,
    "classifier": DomainClassifier,
    "seq2seq": Seq2Seq,
    "tagger": Tagger,
    "frame_labeller": FrameLabeller,
    "sequence_classifier": SequenceClassifier,
    "gan": GAN,
    "cgan": ConditionalGAN,
    "pix2pix": Pix2Pix,
    "cyclegan": CycleGAN,
    "vae": VAE,
    "hvae": HierarchicalVAE,
    "ddpm": DDPM,
}
