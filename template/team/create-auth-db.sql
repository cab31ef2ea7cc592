-- The database of MLflow's basic-auth app (users, permissions), beside the tracking store's `mlflow`.
CREATE DATABASE mlflow_auth;
