"""The Spark engine of ``leopard build``: a sharded index built by a cluster.

``build_on_spark`` (in ``leopard.spark.build``) reads the sources on the executors,
places each tuple on its shard with Spark SQL, and builds each shard in one task; see
that module. pyspark is optional (``pip install 'leopard-index[spark]'``): nothing
here imports it until a build starts.
"""

from __future__ import annotations

from leopard.spark.build import SPARK_FORMATS, build_on_spark

__all__ = ["SPARK_FORMATS", "build_on_spark"]
