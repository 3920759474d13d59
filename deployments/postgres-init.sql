-- The MLflow tracking server's database, beside Prefect's (POSTGRES_DB) in the same cluster.
CREATE DATABASE mlflow;
-- The accounts and permissions of MLflow's basic-auth app (deployments/mlflow-auth.ini).
CREATE DATABASE mlflow_auth;
