"""A detection train loader whose sample order and augmentations are a function of the iteration.

Detectron2's loader groups images by aspect ratio *after* the DataLoader (state that lives in the
main process) and draws augmentations from each worker's RNG (state that lives in the workers);
neither survives a restart. Here, instead:

* Rank r takes the positions j = r, r + W, r + 2W, ... of Detectron2's infinite shuffled index
  stream (its ``TrainingSampler`` / ``RepeatFactorTrainingSampler``, seeded with a seed that is
  saved in the checkpoint), exactly as Detectron2 shards it.
* Aspect-ratio grouping (``DATALOADER.ASPECT_RATIO_GROUPING``) runs on the indices, before
  loading, with Detectron2's rule (bucket ``width > height`` from the dataset dicts, a batch when a
  bucket is full); so the batches after N iterations are recomputed by replaying the grouping over
  indices only (microseconds per image, no decoding).
* The augmentations of the image at global position j draw from NumPy / Python RNGs seeded with
  (seed, j), whatever the number of workers; the main process's RNGs are left untouched.

So a resumed run (same number of processes) sees the same batches, with the same flips, scales
and crops, as an uninterrupted one, with or without grouping and with any ``NUM_WORKERS``.
"""
from __future__ import annotations

import contextlib
import itertools
import random
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from detectron2.data.build import trivial_batch_collator, worker_init_reset_seed
from detectron2.data.common import DatasetFromList
from torch.utils.data import DataLoader, Dataset, Sampler

MAX_RETRIES = 10  # a mapper returning None (a skipped unreadable image): try another image


@contextlib.contextmanager
def seeded_numpy_and_python(*entropy: int) -> Iterator[None]:
    """Seed NumPy's and Python's global RNGs from ``entropy`` inside; restore their states after."""
    np_state, py_state = np.random.get_state(), random.getstate()
    value = int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])
    np.random.seed(value)
    random.seed(value)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


class PositionedDataset(Dataset):
    """``dataset[key]`` maps the image ``key % n`` drawn at global stream position ``key // n``.

    Args:
        dicts: the dataset dicts (n of them).
        mapper: Detectron2 mapper; may return None for an image to skip.
        seed: the augmentation seed (the run's data seed).
    """

    def __init__(self, dicts: Sequence[dict], mapper: Callable[[dict], dict | None], seed: int):
        self.dicts = DatasetFromList(list(dicts), copy=True, serialize=True)
        self.mapper, self.seed, self.n = mapper, int(seed), len(dicts)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int) -> dict:
        position, index = divmod(int(key), self.n)
        for attempt in range(MAX_RETRIES):
            with seeded_numpy_and_python(self.seed, position, attempt):
                mapped = self.mapper(self.dicts[index])
                if mapped is not None:
                    return mapped
                index = int(np.random.randint(self.n))  # deterministic: seeded from (seed, position, attempt)
        raise RuntimeError(f"{MAX_RETRIES} images in a row could not be used at stream position {position}.")


def aspect_groups(dicts: Sequence[dict]) -> np.ndarray:
    """Detectron2's aspect-ratio bucket of every image: 0 if width > height else 1, shape (n,)."""
    return np.array([0 if d["width"] > d["height"] else 1 for d in dicts], dtype=np.int8)


class ResumableBatchSampler(Sampler):
    """This rank's batches of dataset keys (see :class:`PositionedDataset`), from batch ``start`` on.

    Args:
        sampler: a Detectron2 infinite sampler (has ``_infinite_indices``, ``_rank``, ``_world_size``).
        batch_size: images per batch on this rank.
        n: dataset size.
        groups: aspect-ratio bucket per image (:func:`aspect_groups`), or None for no grouping.
        start: batches to skip (the iterations already trained).
    """

    def __init__(self, sampler, batch_size: int, n: int, groups: np.ndarray | None = None, start: int = 0):
        self.sampler, self.batch_size, self.n, self.groups, self.start = sampler, batch_size, n, groups, start

    def _keys(self) -> Iterator[int]:
        rank, world = self.sampler._rank, self.sampler._world_size
        stream = itertools.islice(self.sampler._infinite_indices(), rank, None, world)
        for k, index in enumerate(stream):
            yield (rank + k * world) * self.n + int(index)

    def _batches(self) -> Iterator[list[int]]:
        if self.groups is None:
            keys = self._keys()
            while True:
                yield list(itertools.islice(keys, self.batch_size))
        buckets: list[list[int]] = [[], []]
        for key in self._keys():
            bucket = buckets[self.groups[key % self.n]]
            bucket.append(key)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                del bucket[:]

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(self._batches(), self.start, None)

    def __len__(self) -> int:  # infinite; DataLoader only asks for it in len()
        raise TypeError("an infinite batch sampler has no length")


def build_resumable_loader(dicts: Sequence[dict], mapper, sampler, batch_size: int, *, seed: int,
                           grouping: bool, num_workers: int, start: int = 0) -> DataLoader:
    """The DataLoader described in the module docstring, continuing at batch ``start``.

    Its own seeded generator draws the workers' base seed, so building or iterating it never
    consumes torch's global RNG (which drop path uses and the checkpoint restores).
    """
    dataset = PositionedDataset(dicts, mapper, seed)
    batches = ResumableBatchSampler(sampler, batch_size, len(dicts), aspect_groups(dicts) if grouping else None, start)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=trivial_batch_collator,
                      worker_init_fn=worker_init_reset_seed, generator=generator,
                      prefetch_factor=2 if num_workers > 0 else None)
