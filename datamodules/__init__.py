"""LightningDataModules by benchmark name; add a dataset with one import and one entry."""

from lightning.pytorch import LightningDataModule

from datamodules.text import HelloDataModule, TinyShakespeareDataModule, WordsDataModule

DATAMODULES: dict[str, type[LightningDataModule]] = {
    "hello": HelloDataModule,
    "words": WordsDataModule,
    "tinyshakespeare": TinyShakespeareDataModule,
}
