"""Synthetic data: deterministic organisations of users and nested groups (``org``)."""
