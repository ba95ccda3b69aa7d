"""LightningDataModules by benchmark name; add a dataset with one import and one entry."""

from lightning.pytorch import LightningDataModule

from datamodules.image_pairs import PairedEdgesDataModule, UnpairedDomainsDataModule
from datamodules.images import DigitsDataModule, FashionMNISTDataModule
from datamodules.text import HelloDataModule, TinyShakespeareDataModule, WordsDataModule

DATAMODULES: dict[str, type[LightningDataModule]] = {
    "hello": HelloDataModule,
    "words": WordsDataModule,
    "tinyshakespeare": TinyShakespeareDataModule,
    "digits": DigitsDataModule,
    "fashion_mnist": FashionMNISTDataModule,
    "fashion_edges": PairedEdgesDataModule,
    "fashion_sneaker_boot": UnpairedDomainsDataModule,
}
