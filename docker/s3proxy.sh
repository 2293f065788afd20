#!/bin/bash
# The compose stack's object store: s3proxy 4.1.0 (a real S3 API) over a filesystem store in the s3
# volume, with the buckets `lake` (the tables) and `mlflow` (MLflow's artifacts). The credentials
# come from S3_ACCESS_KEY and S3_SECRET_KEY and are written to a file only this container reads.
set -euo pipefail
mkdir -p /s3data/lake /s3data/mlflow
properties=$(mktemp)
cat > "$properties" <<PROPERTIES
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=${S3_ACCESS_KEY}
s3proxy.credential=${S3_SECRET_KEY}
s3proxy.endpoint=http://0.0.0.0:9000
jclouds.provider=filesystem-nio2
jclouds.filesystem.basedir=/s3data
PROPERTIES
exec java -Xmx256m -jar /opt/ecoval/s3proxy/s3proxy.jar --properties "$properties"
