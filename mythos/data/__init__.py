"""Reading prepared data: shards (Megatron indexed format), packed windows, the distributed-aware loader."""
from mythos.data.indexed import IndexedDataset, IndexedWriter, dtype_for_vocab
from mythos.data.loader import DataLoader, build_loader, check_vocab, open_split, parse_spec, read_metadata
from mythos.data.packed import PackedDataset
from mythos.data.tokenizer import Tokenizer

__all__ = ["read_metadata", "build_loader", "check_vocab", "open_split", "parse_spec", "Tokenizer", "DataLoader",
           "PackedDataset", "IndexedDataset", "IndexedWriter", "dtype_for_vocab"]
