-- Databases of the stack, owned by the `vlmforge` role (POSTGRES_USER).
CREATE DATABASE mlflow OWNER vlmforge;
CREATE DATABASE mlflow_auth OWNER vlmforge;
CREATE DATABASE prefect OWNER vlmforge;
