"""Model registry: log a saved HF model directory as a pyfunc version, look versions up.

Versions are identified by ``(name, version)`` strings. MLflow is imported lazily.
A version's pyfunc is logged from code (``registry/served_model.py`` plus the ``registry`` and
``components`` packages as ``code_paths``), never as a pickle; the sha256 of that code is kept
in the tracking store, apart from the artifacts (:func:`code_digest`, :data:`CODE_DIGEST_TAG`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .tracking import client, current_config

HF_ARTIFACT = "hf_model"  # artifact key of the HF directory inside the pyfunc model
REGISTER_TIMEOUT_S = 300
SERVED_MODEL_FILE = Path(__file__).resolve().with_name("served_model.py")
CODE_PACKAGES = ("registry", "components")  # what the served model imports, logged beside it
CODE_DIR = "code"  # where MLflow puts code_paths inside a logged model
CODE_DIGEST_TAG = "vlmforge.code_sha256"  # a LoggedModel tag: lives in the tracking store
_PIP_PACKAGES = ("mlflow", "torch", "transformers", "pillow", "pandas", "numpy")
_SAFE = re.compile(r"^[^'`\\]*$")  # values we can inline in a search filter


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _pip_requirements() -> list[str]:
    """Pinned requirements of the running environment (no inference, no model run)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in _PIP_PACKAGES:
        try:
            reqs.append(f"{pkg}=={version(pkg).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def _signature() -> Any:
    """Rows of image + question (+ optional history, max_new_tokens) -> answer.

    ``image`` and ``question`` are required by the model but declared optional here:
    MLflow's schema check answers a missing column with an HTTP 500, the model's own
    check with a 400 naming the row and the field.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import AnyType

    from .serving_limits import LIMITS

    return ModelSignature(
        inputs=Schema(
            [
                ColSpec("string", "image", required=False),
                ColSpec("string", "question", required=False),
                # a list of [question, answer] pairs or its JSON string
                ColSpec(AnyType(), "history", required=False),
                # an integer in [1, LIMITS.max_new_tokens]; typed "long", rows with and without
                # it would not mix (NaN) and MLflow would reject them without naming the row
                ColSpec(AnyType(), "max_new_tokens", required=False),
            ]
        ),
        outputs=Schema([ColSpec("string", "answer")]),
        params=ParamSchema([ParamSpec("max_new_tokens", "long", LIMITS.default_new_tokens)]),
    )


def _is_vlm(hf_dir: Path) -> bool:
    """Whether ``hf_dir`` holds an image-text-to-text model (what VLMPyfunc can serve)."""
    import json

    try:
        model_type = json.loads((hf_dir / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return False
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def _code_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(path inside a logged model, file) of everything that runs when the model loads."""
    yield SERVED_MODEL_FILE.name, root / SERVED_MODEL_FILE.name
    for path in sorted((root / CODE_DIR).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path.relative_to(root).as_posix(), path


def code_digest(root: Path) -> str:
    """sha256 over the code a logged model runs on load: its code file and its ``code/`` tree
    (names and bytes), as laid out under ``root`` (a logged model, or :func:`_code_snapshot`)."""
    digest = hashlib.sha256()
    for name, path in _code_files(Path(root)):
        data = path.read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _code_snapshot(target: Path) -> Path:
    """The code file and packages copied once, as the logged model will hold them: what is
    hashed is what is logged, even while the working tree changes."""
    project = SERVED_MODEL_FILE.parent.parent
    shutil.copy(SERVED_MODEL_FILE, target / SERVED_MODEL_FILE.name)
    for package in CODE_PACKAGES:
        shutil.copytree(project / package, target / CODE_DIR / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


@contextmanager
def _quiet_pyfunc_logging() -> Iterator[None]:
    """Silence MLflow's advice on input examples while logging."""
    logger = logging.getLogger("mlflow.pyfunc")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            yield
    finally:
        logger.setLevel(level)


def _ensure_registered_model(name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client().create_registered_model(name)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def register_hf_model(
    hf_dir: Path,
    name: str,
    *,
    run_id: str,
    tags: Mapping[str, str],
    description: str | None = None,
    vlm: bool | None = None,
) -> str:
    """Log ``hf_dir`` as a pyfunc model of run ``run_id`` and register it as a new version.

    The run need not be active (or even running) in this thread. Returns the version
    once it is READY. The pyfunc is logged from code (``served_model.py`` with the
    ``registry`` and ``components`` packages beside it), so loading it unpickles nothing and
    needs no project on the path; the code's :func:`code_digest` is a tag of the LoggedModel.
    A VLM (``vlm``; by default: the config's model type is an image-text-to-text one) is
    logged with the serving signature and an input example, which MLflow checks by
    loading the logged model and answering the example once; other directories
    (backbones) are logged without either.
    """
    import mlflow.pyfunc
    from mlflow.models import Model

    from .pyfunc_model import example_input

    hf_dir = Path(hf_dir).resolve()
    if not hf_dir.is_dir():
        raise FileNotFoundError(f"not a model directory: {hf_dir}")
    if vlm is None:
        vlm = _is_vlm(hf_dir)
    c = client()
    str_tags = {k: str(v) for k, v in tags.items()}
    exp_id = c.get_run(run_id).info.experiment_id
    with tempfile.TemporaryDirectory(prefix="vlmforge-code-") as tmp:
        code = _code_snapshot(Path(tmp))
        # Create the LoggedModel in the run's experiment explicitly: MLflow would otherwise use
        # this thread's active run or the Default experiment.
        logged = c.create_logged_model(exp_id, name=_slug(name), source_run_id=run_id,
                                       tags={**str_tags, CODE_DIGEST_TAG: code_digest(code)})
        with _quiet_pyfunc_logging():
            # Model.log is what mlflow.pyfunc.log_model calls; unlike it, it accepts run_id.
            Model.log(
                artifact_path=None,  # deprecated but positional; MLflow 3 uses `name`
                name=_slug(name),
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=logged.model_id,
                python_model=str(code / SERVED_MODEL_FILE.name),  # models-from-code
                code_paths=[str(code / CODE_DIR / p) for p in CODE_PACKAGES],
                artifacts={HF_ARTIFACT: str(hf_dir)},
                pip_requirements=_pip_requirements(),
                signature=_signature() if vlm else None,
                input_example=example_input() if vlm else None,
            )
    _ensure_registered_model(name)
    mv = c.create_model_version(
        name,
        source=f"models:/{logged.model_id}",
        run_id=run_id,
        tags=str_tags,
        description=description,
        model_id=logged.model_id,
        await_creation_for=REGISTER_TIMEOUT_S,
    )
    status = c.get_model_version(name, mv.version).status
    if status != "READY":
        raise RuntimeError(f"model {name!r} version {mv.version} is {status}, not READY")
    return str(mv.version)


def hf_model_dir(name: str, version: str) -> Path:
    """Local copy of the HF directory of ``name``/``version`` (downloaded once, then cached)."""
    import mlflow.artifacts

    mv = client().get_model_version(name, str(version))
    key = _slug(mv.source.removeprefix("models:/"))
    target = current_config().home / "model-cache" / _slug(name) / f"v{mv.version}-{key}"
    if not (target / "MLmodel").is_file():
        staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        staging.mkdir(parents=True)
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{mv.version}",
                dst_path=str(staging),
                tracking_uri=current_config().tracking_uri,
            )
            try:
                staging.rename(target)
            except OSError:  # another process finished the same download first
                if not (target / "MLmodel").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / _hf_subpath(target)


def _hf_subpath(model_dir: Path) -> str:
    """Where the pyfunc flavor stored the ``hf_model`` artifact (MLflow keeps the dir name)."""
    from mlflow.models import Model

    flavor = Model.load(str(model_dir / "MLmodel")).flavors["python_function"]
    try:
        return flavor["artifacts"][HF_ARTIFACT]["path"]
    except KeyError:
        raise FileNotFoundError(f"{model_dir} has no '{HF_ARTIFACT}' artifact") from None


def _model_id_from_source(source: str | None) -> str | None:
    if source and source.startswith("models:/m-") and source.count("/") == 1:
        return source.removeprefix("models:/")
    return None


def _info(mv: Any) -> dict[str, Any]:
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC)
    return {
        "name": mv.name,
        "version": str(mv.version),
        "status": mv.status,
        "run_id": mv.run_id,
        # the SQL registry store does not persist model_id; MLflow 3 sources are models:/<id>
        "model_id": mv.model_id or _model_id_from_source(mv.source),
        "source": mv.source,
        "description": mv.description,
        "tags": dict(mv.tags),
        "aliases": sorted(mv.aliases),
        "creation_timestamp": mv.creation_timestamp,
        "created": created.isoformat(),
    }


def _search(name: str, tags: Mapping[str, str] | None = None) -> list[Any]:
    """All versions of ``name`` (newest first) whose tags include ``tags``.

    Filters are pushed down to the store (the SQL store ANDs tag filters) where
    safely quotable; the result is always re-checked in Python.
    """
    tags = {k: str(v) for k, v in (tags or {}).items()}
    clauses = [f"name = '{name}'"] if _SAFE.match(name) else []
    clauses += [f"tags.`{k}` = '{v}'" for k, v in tags.items() if _SAFE.match(k) and _SAFE.match(v)]
    c, found, token = client(), [], None
    while True:
        page = c.search_model_versions(
            " AND ".join(clauses) or None,
            max_results=1000,
            order_by=["version_number DESC"],
            page_token=token,
        )
        found.extend(page)
        token = page.token
        if not token:
            break
    matches = [
        mv for mv in found if mv.name == name and all(mv.tags.get(k) == v for k, v in tags.items())
    ]
    return sorted(matches, key=lambda mv: int(mv.version), reverse=True)


def find_version(name: str, tags: Mapping[str, str]) -> str | None:
    """Newest READY version of ``name`` whose tags include all of ``tags``."""
    for mv in _search(name, tags):
        if mv.status == "READY":
            return str(mv.version)
    return None


def version_info(name: str, version: str) -> dict[str, Any]:
    """Tags, run id, aliases, status, source and creation time of one version."""
    return _info(client().get_model_version(name, str(version)))


def list_versions(name: str) -> list[dict[str, Any]]:
    """:func:`version_info` of every version of ``name``, oldest first."""
    return [_info(mv) for mv in reversed(_search(name))]


def get_alias(name: str, alias: str) -> str | None:
    """Version holding ``alias`` of model ``name``, or None (also when the model is unknown)."""
    from mlflow.exceptions import MlflowException

    try:
        version = client().get_registered_model(name).aliases.get(alias)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return None if version is None else str(version)


def set_alias(name: str, alias: str, version: str) -> None:
    """Point ``alias`` of model ``name`` at ``version`` (moving it if held elsewhere)."""
    client().set_registered_model_alias(name, alias, str(version))


CAS_SETTLE_S = 0.2  # wait before the check after a move: a racing move lands in it


class AliasRaceError(RuntimeError):
    """Another move of the alias came between this one's check and its move: the alias is
    left to the other mover, never overwritten."""

    def __init__(self, name: str, alias: str, version: str, expected: str | None,
                 found: str | None) -> None:
        self.name, self.alias, self.version = name, alias, str(version)
        self.expected, self.found = expected, found
        held = lambda v: f"v{v}" if v else "no version"  # noqa: E731
        super().__init__(f"'{alias}' of {name} moved to {held(found)} while v{version} was gated "
                         f"against {held(expected)}; nothing recorded on v{version}: gate it "
                         f"again against {held(found)}")


def move_alias(name: str, alias: str, version: str, *, expected: str | None) -> None:
    """Compare-and-swap: point ``alias`` at ``version`` only if it still points at ``expected``
    (None: unset). The alias is re-read right before the move and again after it, once a racing
    move has had time to land; either read finding another holder raises
    :class:`AliasRaceError`. MLflow has no atomic alias update, so two moves whose re-reads
    both precede both writes and both checks can still both pass; the scheduled flows that
    promote share one Prefect work queue of concurrency 1, which keeps them apart."""
    version = str(version)
    current = get_alias(name, alias)
    if current != expected:
        raise AliasRaceError(name, alias, version, expected, current)
    set_alias(name, alias, version)
    time.sleep(CAS_SETTLE_S)
    after = get_alias(name, alias)
    if after != version:
        raise AliasRaceError(name, alias, version, expected, after)


def set_version_tags(name: str, version: str, tags: Mapping[str, Any]) -> None:
    """Set (overwrite) tags on one version; values are stringified."""
    c = client()
    for k, v in tags.items():
        c.set_model_version_tag(name, str(version), k, str(v))
