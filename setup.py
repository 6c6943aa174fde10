"""The compiled part of the package: the codec of stored sets (leopard/model/_sets.c).

Everything else is in pyproject.toml. The extension is optional: where it cannot be
compiled, leopard/model/setcodec.py reads and writes the same bytes in Python, slower
(``leopard --version`` says which is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "leopard.model._sets",
            sources=["leopard/model/_sets.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        )
    ]
)
