# The Prefect worker of both stacks: Prefect and its Docker and Kubernetes workers at exact
# versions, installed at build time (no `pip install` when the container starts, so the
# worker needs no route to a package index). Build context: infra/prefect/.
#   docker build -f infra/prefect/worker.Dockerfile -t vlmforge-prefect-worker:3.9.1 infra/prefect
FROM prefecthq/prefect:3.9.1-python3.11
RUN pip install --no-cache-dir "prefect==3.9.1" "prefect-docker==0.7.4" "prefect-kubernetes==0.8.0"
