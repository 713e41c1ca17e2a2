"""Datasets: reading triple files, id maps, and finding datasets by name or path."""

from kgweave.data.dataset import IdMap, KGDataset, load_dataset
from kgweave.data.sources import DatasetInfo, list_datasets, resolve_dataset

__all__ = ["DatasetInfo", "IdMap", "KGDataset", "list_datasets", "load_dataset", "resolve_dataset"]
