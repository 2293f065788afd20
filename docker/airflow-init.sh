#!/usr/bin/env bash
# One-off initialisation of the stack: the Airflow metadata schema, the admin user of the
# simple auth manager, and the GPU pool that caps concurrent LCO shard tasks.
set -euo pipefail
airflow db migrate
airflow pools set ecoval_gpu "${ECOVAL_GPU_SLOTS:-1}" "LCO training shards: one slot per GPU"
mkdir -p /lakehouse/mlartifacts
echo "airflow initialised; pool ecoval_gpu has ${ECOVAL_GPU_SLOTS:-1} slot(s)"
