# MLflow tracking server: basic-auth app, PostgreSQL driver, S3 client; the start-up secrets
# check (also run as the compose `secrets-check` service and the Kubernetes init containers).
# Every version is exact. Keep MLFLOW_VERSION equal to the clients' mlflow (pyproject) so the
# tracking API and the database schema match, and the image tag (vlmforge-mlflow:<version>)
# equal to it.
FROM python:3.11.11-slim-bookworm
ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary==2.9.13" \
    "boto3==1.44.5"
COPY check_secrets.py start_mlflow.py /opt/vlmforge/
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin mlflow
USER 10001
EXPOSE 5000
# no secret on the command line: start_mlflow.py reads them from env or *_FILE
ENTRYPOINT ["python", "/opt/vlmforge/start_mlflow.py"]
