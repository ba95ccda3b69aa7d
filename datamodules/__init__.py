"""LightningDataModules by benchmark name; add a dataset with one import and one entry."""

from lightning.pytorch import LightningDataModule

from datamodules.conllu import UDPOSDataModule
from datamodules.frames import FrameVideoDataModule
from datamodules.image_pairs import PairedEdgesDataModule, UnpairedDomainsDataModule
from datamodules.images import DigitsDataModule, FashionMNISTDataModule
from datamodules.long_lag import LongLagDataModule
from datamodules.text import HelloDataModule, TinyShakespeareDataModule, WordsDataModule
from datamodules.translation import Multi30kDataModule

DATAMODULES: dict[str, type[LightningDataModule]] = {
    "hello": HelloDataModule,
    "words": WordsDataModule,
    "tinyshakespeare": TinyShakespeareDataModule,
    "digits": DigitsDataModule,
    "fashion_mnist": FashionMNISTDataModule,
    "fashion_edges": PairedEdgesDataModule,
    "fashion_sneaker_boot": UnpairedDomainsDataModule,
    "multi30k": Multi30kDataModule,
    "ud_ewt": UDPOSDataModule,
    "fashion_video": FrameVideoDataModule,
    "long_lag": LongLagDataModule,
}
