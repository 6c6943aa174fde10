"""The compiled parts of the package: the codec of stored sets (leopard/model/_sets.c) and
the hot loops of applying member changes (leopard/core/_apply.c).

Everything else is in pyproject.toml. Both extensions are optional: where they cannot be
compiled, leopard/model/setcodec.py reads and writes the same bytes in Python, and
leopard/core/batchwork.py runs the same loops in Python, slower (``leopard --version``
says which is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "leopard.model._sets",
            sources=["leopard/model/_sets.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        ),
        Extension(
            "leopard.core._apply",
            sources=["leopard/core/_apply.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        ),
    ]
)
