"""Kafka: the change source (polling, offsets, dead letters), publishing, a local broker."""
