"""`python -m mae_transfer.data [NAME ...]`: generate built-in datasets and print where they are."""
import sys

from .builtin import BUILTIN_DATASETS, builtin_dataset

for dataset_name in sys.argv[1:] or sorted(BUILTIN_DATASETS):
    ds = builtin_dataset(dataset_name)
    print(f"{ds.name}: {ds.json_path or ds.root}" + (f" images: {ds.image_dir}" if ds.image_dir else ""))
