#!/usr/bin/env bash
# One-off initialisation of the stack: the Airflow metadata schema, the admin password of the
# simple auth manager (its passwords file; the users list only names users and roles), and the
# GPU pool that caps concurrent LCO shard tasks (tasks of a missing pool stay scheduled for ever).
set -euo pipefail
airflow db migrate
airflow pools set ecoval_gpu "${ECOVAL_GPU_SLOTS:-1}" "LCO training shards: one slot per GPU"
mkdir -p /lakehouse/mlartifacts "$(dirname "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")"
python -c 'import json, os, sys; json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, open(sys.argv[1], "w"))' \
  "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
echo "airflow initialised; pool ecoval_gpu has ${ECOVAL_GPU_SLOTS:-1} slot(s)"
