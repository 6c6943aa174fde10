"""The index: build, layers, incremental changes, compaction and queries."""
