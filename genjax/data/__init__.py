"""Datasets for genjax: offline tfds builders and grain input pipelines.

    info = prepare("mnist5k")                      # builds once into default_data_dir()
    it = train_iterator("mnist5k", batch_size=64, seed=0)
    batch = next(it)                               # {"image": uint8[64,28,28,1], "label": int32[64]}
    state = it.get_state()                         # JSON; it.set_state(state) on a fresh iterator resumes
    for b in eval_batches("mnist5k", batch_size=256): ...   # adds "mask": float32[256]

See docs/data.md.
"""

from genjax.data.catalog import KNOWN_DATASETS
from genjax.data.catalog import DatasetInfo
from genjax.data.catalog import dataset_info
from genjax.data.catalog import default_data_dir
from genjax.data.catalog import prepare
from genjax.data.pipeline import EvalBatches
from genjax.data.pipeline import TrainIterator
from genjax.data.pipeline import eval_batches
from genjax.data.pipeline import train_iterator

__all__ = [
    "KNOWN_DATASETS", "DatasetInfo", "dataset_info", "default_data_dir", "prepare",
    "EvalBatches", "TrainIterator", "eval_batches", "train_iterator",
]
