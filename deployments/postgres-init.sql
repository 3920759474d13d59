-- The MLflow tracking server's database, beside Prefect's (POSTGRES_DB) in the same cluster.
CREATE DATABASE mlflow;
