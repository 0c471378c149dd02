"""The detection loader's batches: Detectron2's aspect-ratio grouping, recomputable after N iterations."""
from __future__ import annotations

import itertools

import numpy as np
from detectron2.data.common import AspectRatioGroupedDataset
from detectron2.data.samplers import TrainingSampler

from mae_transfer.det.resumable_loader import PositionedDataset, ResumableBatchSampler, aspect_groups


def _dicts(n: int = 13) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"image_id": i, "width": int(w), "height": int(h)} for i, (w, h) in enumerate(rng.integers(40, 90, (n, 2)))]


def test_grouping_matches_detectron2_and_resumes_at_any_iteration():
    dicts, batch = _dicts(), 3
    sampler = TrainingSampler(len(dicts), seed=5)  # one process: rank 0 of 1
    ours = ResumableBatchSampler(sampler, batch, len(dicts), aspect_groups(dicts))
    first = list(itertools.islice(iter(ours), 20))
    # Detectron2's own grouping over the same sampler, run on the dicts themselves.
    reference = AspectRatioGroupedDataset((dicts[i] for i in iter(sampler)), batch)
    expected = [[d["image_id"] for d in b] for b in itertools.islice(iter(reference), 20)]
    assert [[key % len(dicts) for key in b] for b in first] == expected
    assert len({aspect_groups(dicts)[k % len(dicts)] for b in first for k in b[:1]}) == 2  # both buckets used
    for start in (1, 7, 19):
        resumed = ResumableBatchSampler(sampler, batch, len(dicts), aspect_groups(dicts), start=start)
        assert list(itertools.islice(iter(resumed), 20 - start)) == first[start:]


def test_augmentation_depends_on_the_stream_position_only():
    def mapper(d):
        return {"id": d["image_id"], "flip": float(np.random.rand())}

    dataset = PositionedDataset(_dicts(), mapper, seed=3)
    state = np.random.get_state()
    a, b = dataset[5 * 13 + 2], dataset[5 * 13 + 2]
    assert a == b and a["id"] == 2 and dataset[6 * 13 + 2] != a
    assert np.array_equal(np.random.get_state()[1], state[1])  # the caller's RNG is untouched
