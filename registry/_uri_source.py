"""A dataset source for URIs MLflow cannot resolve itself (e.g. ``dvc://``, ``hf://``)."""

from __future__ import annotations

from typing import Any

from mlflow.data.dataset_source import DatasetSource


class URIDatasetSource(DatasetSource):
    """Records a source URI only; loading is not supported."""

    def __init__(self, uri: str) -> None:
        self._uri = uri

    @property
    def uri(self) -> str:
        return self._uri

    @staticmethod
    def _get_source_type() -> str:
        return "uri"

    def load(self, **kwargs: Any) -> Any:
        raise NotImplementedError(f"cannot load dataset from {self._uri}")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> URIDatasetSource:
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self._uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> URIDatasetSource:
        return cls(source_dict["uri"])
