"""Benchmarks and peers that Leopard is compared with (importable as ``bench.*``)."""
