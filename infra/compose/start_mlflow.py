"""Entry point of the MLflow tracking server image: check the secrets, write the basic-auth
config to a private file, then exec `mlflow server` with no secret on its command line.

The Postgres password never enters a URI: the backend store and the auth database are
`postgresql+psycopg2://vlmforge@postgres:5432/...` and libpq reads the password from
PGPASSWORD (set here from POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE). The admin password
goes only into the basic-auth config file (MLFLOW_AUTH_CONFIG_PATH, default
/tmp/basic_auth.ini, mode 0600). Standard library only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_secrets import problems, secret_value  # noqa: E402

DB_HOST = "postgres:5432"
DB_USER = "vlmforge"
AUTH_INI = "/tmp/basic_auth.ini"
SECRETS = ["POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"]


def database_uri(database: str) -> str:
    """A password-less SQLAlchemy URI: libpq takes the password from PGPASSWORD."""
    return f"postgresql+psycopg2://{DB_USER}@{DB_HOST}/{database}"


def auth_config(env: Mapping[str, str]) -> str:
    """The basic-auth app's config: users in the `mlflow_auth` database, READ by default."""
    return ("[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {database_uri('mlflow_auth')}\n"
            f"admin_username = {env.get('MLFLOW_ADMIN_USER', 'admin')}\n"
            f"admin_password = {secret_value('MLFLOW_ADMIN_PASSWORD', env)}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")


def server_argv(port: int = 5000) -> list[str]:
    """`mlflow server`'s command line: nothing secret in it."""
    return ["mlflow", "server", "--host", "0.0.0.0", "--port", str(port),
            "--backend-store-uri", database_uri("mlflow"),
            "--artifacts-destination", "s3://mlflow/artifacts", "--serve-artifacts",
            "--app-name", "basic-auth"]


def server_env(env: Mapping[str, str], config_path: str = AUTH_INI) -> dict[str, str]:
    """The server's environment: PGPASSWORD and the Flask secret key from env or files, the
    auth config's path; the *_FILE indirections and POSTGRES_PASSWORD itself dropped."""
    out = {k: v for k, v in env.items() if not k.endswith("_FILE") and k != "POSTGRES_PASSWORD"}
    out["PGPASSWORD"] = secret_value("POSTGRES_PASSWORD", env) or ""
    out["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secret_value("MLFLOW_FLASK_SERVER_SECRET_KEY", env) or ""
    out["MLFLOW_AUTH_CONFIG_PATH"] = config_path
    return out


def write_private(path: str, text: str) -> None:
    """Write ``text`` readable by this user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def main() -> int:
    found = problems(os.environ, SECRETS)
    if found:
        print("refusing to start the MLflow server:\n" + "\n".join(f"  - {p}" for p in found),
              file=sys.stderr, flush=True)
        return 1
    config_path = os.environ.get("MLFLOW_AUTH_CONFIG_PATH", AUTH_INI)
    write_private(config_path, auth_config(os.environ))
    argv = server_argv(int(os.environ.get("MLFLOW_PORT", "5000")))
    os.execvpe(argv[0], argv, server_env(os.environ, config_path))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
