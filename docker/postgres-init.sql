-- Two databases on one Postgres: Airflow's metadata and MLflow's backend store.
CREATE DATABASE mlflow OWNER ecoval;
