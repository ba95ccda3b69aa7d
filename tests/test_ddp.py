"""The two DDP gaps: Multi30k's length-bucketed batch sampler under Lightning's distributed sampler, and the
adversarial models' DDP strategy chosen for them (plain DDP refuses a step that leaves a network idle)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.core.params import experiment_from_params
from tests.conftest import tiny_params


def _bucket_loader(n: int, batch: int, chunk: int) -> tuple[torch.utils.data.DataLoader, list[int]]:
    """The Multi30k training loader's batch sampler over n synthetic pairs of varied source length, made the way
    Lightning's Trainer makes it (inside the hooks where it records a batch sampler's arguments)."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from torch.utils.data import BatchSampler, DataLoader

    from datamodules.loaders import seeded_loader
    from datamodules.sampling import EpochShuffleSampler
    from datamodules.translation import BucketBatchSampler, PairDataset, pair_collate

    pairs = [([5] * (1 + (i * 7) % 13), [2, 6, 3]) for i in range(n)]
    lengths = [len(s) for s, _ in pairs]
    dataset = PairDataset(pairs)

    def buckets(seed: int) -> BucketBatchSampler:
        return BucketBatchSampler(EpochShuffleSampler(n, seed), batch, lengths=lengths, chunk=chunk)

    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = seeded_loader(dataset, batch, train=True, num_workers=0, collate_fn=pair_collate, batch_sampler=buckets)
    return loader, lengths


def test_lightning_puts_its_distributed_sampler_into_the_bucketed_batches() -> None:
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DistributedSampler

    from datamodules.translation import BucketBatchSampler

    n, batch, chunk = 203, 8, 32
    loader, lengths = _bucket_loader(n, batch, chunk)
    shards = []
    for rank in (0, 1):
        # What Lightning's data connector does under DDP: a DistributedSampler over the dataset, injected into a
        # rebuilt copy of the loader's batch sampler (the TypeError case when the class cannot be rebuilt).
        sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True, seed=7)
        sampler.set_epoch(3)
        rebuilt = _update_dataloader(loader, sampler)
        assert isinstance(rebuilt.batch_sampler, BucketBatchSampler) and rebuilt.batch_sampler.sampler is sampler
        batches = list(rebuilt.batch_sampler)
        assert len(batches) == len(rebuilt.batch_sampler)
        shards.append(batches)
    assert len(shards[0]) == len(shards[1])  # every rank steps the same number of times
    seen = [i for shard in shards for b in shard for i in b]
    assert set(seen) == set(range(n)) and len(seen) == 2 * -(-n // 2)  # all of it; the sampler pads one share
    overlap = {i for b in shards[0] for i in b} & {i for b in shards[1] for i in b}
    assert len(overlap) <= 2 * -(-n // 2) - n  # disjoint shares, but for the one padded index
    # Still bucketed: within a batch the source lengths are close (each batch is cut from one sorted chunk).
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for shard in shards for b in shard)
    unsorted = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b)
                   for b in torch.arange(n).view(-1, 7)[:, :batch].tolist())
    assert spread < unsorted / 2


@pytest.mark.parametrize("model", ["gan", "pix2pix", "cyclegan"])
@pytest.mark.parametrize("given, chosen", [({"strategy": "ddp", "devices": 2}, "ddp_find_unused_parameters_true"),
                                           ({"strategy": "ddp_spawn", "devices": 2}, "ddp_spawn_find_unused_parameters_true"),
                                           ({"devices": 2}, "ddp_find_unused_parameters_true"),
                                           ({"devices": 1}, "auto"),
                                           ({"strategy": "ddp_find_unused_parameters_true"}, "ddp_find_unused_parameters_true")])
def test_adversarial_models_get_a_ddp_strategy_that_allows_idle_networks(model: str, given: dict, chosen: str) -> None:
    from benchmarks.run.build import trainer_args
    from benchmarks.run.validate import resolve_strategy

    params = tiny_params()
    params["experiments"]["x"] = {"model": model, "data": "digits", "seeds": [0],
                                  "trainer": {"max_epochs": 1, "accelerator": "cpu"} | given}
    exp = experiment_from_params(params, "x")
    assert resolve_strategy(exp, trainer_args(exp)).get("strategy", "auto") == chosen


def test_other_models_keep_plain_ddp() -> None:
    from benchmarks.run.build import trainer_args
    from benchmarks.run.validate import resolve_strategy

    params = tiny_params()
    params["experiments"]["hello_lstm"]["trainer"] |= {"strategy": "ddp", "devices": 2, "accelerator": "cpu"}
    exp = experiment_from_params(params, "hello_lstm")
    assert resolve_strategy(exp, trainer_args(exp))["strategy"] == "ddp"


@pytest.mark.slow
def test_the_gan_trains_under_ddp_on_two_cpu_processes_without_naming_a_strategy(project, capsys) -> None:  # type: ignore[no-untyped-def]
    """Two processes (Lightning's launcher reruns the command); the GAN's D step leaves G idle and vice versa."""
    import subprocess

    from tests.conftest import env_for_subprocess, write_params

    params = tiny_params()
    params["experiments"] = {"gan_ddp": {"model": "gan", "data": "digits", "seeds": [0],
                                         "model_args": {"latent_dim": 8, "base_channels": 8, "sample_grid": 0},
                                         "trainer": {"max_epochs": 1, "limit_train_batches": 4, "limit_val_batches": 2,
                                                     "limit_test_batches": 2, "devices": 2, "accelerator": "cpu"}}}
    write_params(project / "params.yaml", params)
    done = subprocess.run(["archbench", "train", "gan_ddp", "--no-progress"], cwd=project, env=env_for_subprocess(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (project / "results" / "gan_ddp" / "seeds" / "seed_0" / "result.json").is_file()
