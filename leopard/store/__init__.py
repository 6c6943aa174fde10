"""Storage: the on-disk format, RocksDB (the only importer of rocksdict), generations."""
