# MLflow tracking server: basic-auth app, PostgreSQL driver, S3 client. Keep MLFLOW_VERSION
# equal to the clients' mlflow (pyproject) so the tracking API and the database schema match.
FROM python:3.11-slim
ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary>=2.9" "boto3>=1.34"
EXPOSE 5000
