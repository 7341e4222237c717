"""registry.models: pyfunc registration, lookup, aliases and download on a SQLite store."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import registry


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_register_versions_and_lookup(home: Path, model_name: str, plain_model_dir: Path) -> None:
    import mlflow

    with registry.start_run("train") as run_id:
        pass  # registration works on a finished run, from a thread where it is not active
    with registry.start_run("unrelated") as other:  # ...and while another run is active
        v1 = registry.register_hf_model(
            plain_model_dir,
            model_name,
            run_id=run_id,
            tags={"data.digest": "abc", "recipe": "tiny"},
            description="first",
        )
    v2 = registry.register_hf_model(
        plain_model_dir, model_name, run_id=run_id, tags={"data.digest": "def", "recipe": "tiny"}
    )
    assert (v1, v2) == ("1", "2")

    info = registry.version_info(model_name, v1)
    assert info["status"] == "READY" and info["run_id"] == run_id
    assert info["tags"] == {"data.digest": "abc", "recipe": "tiny"}
    assert info["description"] == "first" and info["aliases"] == []
    assert info["created"].endswith("+00:00")
    assert [v["version"] for v in registry.list_versions(model_name)] == ["1", "2"]

    # the LoggedModel lives in the run's experiment and is an output of that run only
    client = mlflow.MlflowClient()
    logged = client.get_logged_model(info["model_id"])
    assert logged.source_run_id == run_id
    assert logged.experiment_id == registry.get_run(run_id)["experiment_id"]
    outputs = client.get_run(run_id).outputs.model_outputs
    assert {o.model_id for o in outputs} >= {info["model_id"]}
    assert not client.get_run(other).outputs.model_outputs

    assert registry.find_version(model_name, {"recipe": "tiny"}) == "2"
    assert registry.find_version(model_name, {"data.digest": "abc", "recipe": "tiny"}) == "1"
    assert registry.find_version(model_name, {"data.digest": "zzz"}) is None
    assert registry.find_version(model_name, {}) == "2"
    assert registry.find_version("no-such-model", {"recipe": "tiny"}) is None
    # values that cannot be inlined in a filter string are matched in Python
    registry.set_version_tags(model_name, v1, {"note": "it's"})
    assert registry.find_version(model_name, {"note": "it's"}) == "1"


def test_aliases(home: Path, model_name: str, plain_model_dir: Path) -> None:
    with registry.start_run("train") as run_id:
        v1 = registry.register_hf_model(plain_model_dir, model_name, run_id=run_id, tags={})
        v2 = registry.register_hf_model(plain_model_dir, model_name, run_id=run_id, tags={})
    assert registry.get_alias(model_name, "champion") is None
    assert registry.get_alias("no-such-model", "champion") is None
    registry.set_alias(model_name, "champion", v1)
    assert registry.get_alias(model_name, "champion") == v1
    registry.set_alias(model_name, "champion", v2)
    assert registry.get_alias(model_name, "champion") == v2
    assert registry.version_info(model_name, v2)["aliases"] == ["champion"]
    assert registry.version_info(model_name, v1)["aliases"] == []


def test_hf_model_dir_downloads_once(home: Path, model_name: str, plain_model_dir: Path) -> None:
    with registry.start_run("train") as run_id:
        version = registry.register_hf_model(plain_model_dir, model_name, run_id=run_id, tags={})
    local = registry.hf_model_dir(model_name, version)
    assert local.is_dir() and local.is_relative_to(home / "model-cache")
    assert _files(local) == _files(plain_model_dir)
    (local / "marker").write_text("cached")
    assert registry.hf_model_dir(model_name, version) == local
    assert (local / "marker").exists()  # served from the cache, not downloaded again


def test_register_missing_dir_fails(home: Path, model_name: str, tmp_path: Path) -> None:
    with registry.start_run("train") as run_id, pytest.raises(FileNotFoundError):
        registry.register_hf_model(tmp_path / "nope", model_name, run_id=run_id, tags={})


def test_pyfunc_predict_with_tiny_vlm(
    home: Path, model_name: str, tiny_vlm_dir: Path, tmp_path: Path
) -> None:
    import mlflow.pyfunc
    import torch
    from mlflow.exceptions import MlflowException
    from transformers import AutoModelForImageTextToText, AutoProcessor

    with registry.start_run("train") as run_id:
        version = registry.register_hf_model(tiny_vlm_dir, model_name, run_id=run_id, tags={})
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    image.save(tmp_path / "img.png")

    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    out = model.predict(
        pd.DataFrame(
            {"image": [b64, "data:image/png;base64," + b64], "question": ["what is this ?"] * 2}
        )
    )
    assert list(out.columns) == ["answer"] and len(out) == 2
    assert out["answer"][0] == out["answer"][1]  # same pixels via base64 and a data URL
    with pytest.raises(MlflowException, match="looks like a file path"):  # never read, even here
        model.predict(pd.DataFrame({"image": [str(tmp_path / "img.png")], "question": ["hi"]}))

    # reference: the same greedy decode done by hand, new tokens only
    hf_dir = registry.hf_model_dir(model_name, version)
    processor = AutoProcessor.from_pretrained(hf_dir)
    hf_model = AutoModelForImageTextToText.from_pretrained(hf_dir).eval()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is this ?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=[[image]], return_tensors="pt")
    with torch.inference_mode():
        ids = hf_model.generate(**inputs, max_new_tokens=3, do_sample=False)
    expected = processor.batch_decode(
        ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )
    short = model.predict(
        pd.DataFrame({"image": [b64], "question": ["what is this ?"], "max_new_tokens": [3]})
    )
    assert short["answer"][0] == expected[0].strip()
    assert (
        model.predict(
            pd.DataFrame({"image": [b64], "question": ["what is this ?"]}),
            params={"max_new_tokens": 3},
        )["answer"][0]
        == short["answer"][0]
    )


def test_registered_versions_are_code_not_pickles(home: Path, model_name: str,
                                                  plain_model_dir: Path) -> None:
    """Every version (backbones too) is logged from code: nothing to unpickle on load."""
    from mlflow.models import Model

    from registry.models import CODE_DIGEST_TAG, code_digest

    with registry.start_run("train") as run_id:
        version = registry.register_hf_model(plain_model_dir, model_name, run_id=run_id, tags={})
    local = next(p for p in registry.hf_model_dir(model_name, version).parents
                 if (p / "MLmodel").is_file())
    flavor = Model.load(str(local / "MLmodel")).flavors["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert Path(flavor["model_code_path"]).name == "served_model.py"
    assert not list(local.rglob("*.pkl"))
    assert (local / "code" / "registry" / "pyfunc_model.py").is_file()
    import mlflow

    model_id = registry.version_info(model_name, version)["model_id"]
    assert mlflow.MlflowClient().get_logged_model(model_id).tags[CODE_DIGEST_TAG] == code_digest(
        local)
