"""spark-submit entry point for `quantgate score`:

    spark-submit --master yarn deploy/spark_score.py \
        --input 'hdfs:///news/*.parquet' --output /mnt/shared/scores.parquet

A file outside flows/ on purpose: spark-submit puts the script's folder first on sys.path, and
quantgate/packaging.py would then shadow the `packaging` library. quantgate must be importable
(pip install -e . or the wheel) on the driver and the executors.
"""

from flows.errors import run
from flows.score import cli

if __name__ == "__main__":
    run(cli)
