"""Serving: a registered tiny VLM behind `vlmforge serve` (MLflow's scoring server behind the
request guard) answers good rows, rejects bad ones with 400 + a message naming row and rule,
and keeps serving. The attacker's view is in tests/security/."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

import registry


@pytest.fixture
def vlm_dir(backbones, tokenizer, tmp_path: Path) -> Path:
    """A tiny Idefics3 VLM saved the way the training stages save it."""
    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.build import save_vlm

    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()
    processor = build_processor(tokenizer, tile_size=32, longest_edge=64, patch_size=8,
                                scale_factor=2)
    return save_vlm(model, processor, tmp_path / "vlm")


def _png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _post(url: str, records: list[dict], params: dict | None = None) -> tuple[int, dict]:
    body = {"dataframe_records": records, **({"params": params} if params else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_registered_vlm_has_signature_and_input_example(home: Path, model_name: str,
                                                        vlm_dir: Path) -> None:
    from mlflow.models import Model

    with registry.start_run("train") as run_id:
        version = registry.register_hf_model(vlm_dir, model_name, run_id=run_id, tags={})
    local = next(p for p in registry.hf_model_dir(model_name, version).parents
                 if (p / "MLmodel").is_file())
    mlmodel = Model.load(str(local / "MLmodel"))
    inputs = {c.name: c for c in mlmodel.signature.inputs.inputs}
    assert list(inputs) == ["image", "question", "history", "max_new_tokens"]
    assert not any(c.required for c in inputs.values())  # the model checks, answering 400
    assert mlmodel.signature.outputs.input_names() == ["answer"]
    example = mlmodel.load_input_example(str(local))
    assert list(example.columns) == ["image", "question", "max_new_tokens"]
    Image.open(io.BytesIO(base64.b64decode(example["image"][0]))).verify()
    assert (local / "serving_input_example.json").is_file()


def test_predict_validates_rows(vlm_dir: Path) -> None:
    from mlflow.exceptions import MlflowException

    from registry.pyfunc_model import HF_ARTIFACT, VLMPyfunc
    from registry.serving_limits import LIMITS

    model = VLMPyfunc()
    model.load_context(SimpleNamespace(artifacts={HF_ARTIFACT: str(vlm_dir)}))
    b64 = _png_b64(Image.new("RGB", (40, 30), "red"))

    def error(rows: list[dict], params: dict | None = None) -> str:
        with pytest.raises(MlflowException) as e:
            model.predict(None, pd.DataFrame(rows), params)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"
        return e.value.message

    ok = {"image": b64, "question": "Colour?"}
    history = [["Is there a circle?", "yes"]]
    out = model.predict(None, pd.DataFrame([
        {**ok, "max_new_tokens": 3},
        {**ok, "max_new_tokens": 3, "history": history},
        {**ok, "max_new_tokens": 3, "history": json.dumps(history)},
        {**ok, "image": "data:image/png;base64," + b64, "max_new_tokens": 3},
    ]))
    assert list(out.columns) == ["answer"] and all(isinstance(a, str) for a in out["answer"])
    assert out["answer"][1] == out["answer"][2] and out["answer"][0] == out["answer"][3]

    # within the character cap, but a prompt longer than the model's context
    msg = error([ok, {**ok, "question": "Colour? " * 400}])
    assert "row 1: prompt is" in msg and "over the limit" in msg and "row 0" not in msg
    assert f"[1, {LIMITS.max_new_tokens}]" in error([{**ok, "max_new_tokens": 0}])
    assert "row 0: 'max_new_tokens' must be an integer" in error([{**ok, "max_new_tokens": 2.5}])
    assert "param 'max_new_tokens'" in error([ok], {"max_new_tokens": LIMITS.max_new_tokens + 1})
    assert "row 0: 'image' looks like a file path" in error([{**ok, "image": str(vlm_dir)}])
    assert "row 0: 'history' is not valid JSON" in error([{**ok, "history": "[["}])
    assert "row 0: 'history' turn 0" in error([{**ok, "history": [["only a question"]]}])
    msg = error([{"question": "?"}, {**ok, "question": "  "}])
    assert "row 0: missing field 'image'" in msg and "row 1: 'question' is empty" in msg


def test_model_server_answers_and_rejects_bad_requests(home: Path, model_name: str,
                                                       vlm_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.commands.serve import free_port, start_server, stop_server, wait_until_ready
    from registry.serving_limits import LIMITS

    server_tmp = tmp_path / "server-tmp"  # the server downloads the model under its TMPDIR
    server_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(server_tmp))

    with registry.start_run("train") as run_id:
        version = registry.register_hf_model(vlm_dir, model_name, run_id=run_id, tags={})
    registry.set_alias(model_name, "champion", version)

    port = free_port()
    url = f"http://127.0.0.1:{port}/invocations"
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = start_server(f"models:/{model_name}@champion", port, stdout=out,
                            stderr=subprocess.STDOUT)
    try:
        try:
            wait_until_ready(proc, port)
        except (RuntimeError, TimeoutError):
            pytest.fail(f"server did not start:\n{log.read_text()[-3000:]}")
        image = _png_b64(Image.new("RGB", (48, 40), (200, 30, 30)))
        good = {"image": image, "question": "What colour is the circle?", "max_new_tokens": 4}

        status, body = _post(url, [good])
        assert status == 200, body
        first = body["predictions"][0]["answer"]
        assert isinstance(first, str)

        side = int(LIMITS.max_image_pixels**0.5) + 1
        huge = _png_b64(Image.new("1", (side, side)))  # few bytes, too many pixels
        bad = {
            "not valid base64": {**good, "image": "this is not base64!"},
            "not a PNG, JPEG or WEBP file": {**good,
                                             "image": base64.b64encode(b"plain text").decode()},
            "missing field 'question'": {"image": image},
            f"over the limit of {LIMITS.max_image_pixels} pixels": {**good, "image": huge},
            f"over the limit of {LIMITS.max_image_bytes} bytes": {
                **good,
                "image": base64.b64encode(os.urandom(LIMITS.max_image_bytes + 1)).decode()},
            "outside the range": {**good, "max_new_tokens": 100_000},
        }
        for problem, row in bad.items():
            status, body = _post(url, [good, row])
            assert status == 400, (problem, body)
            assert body["error_code"] == "INVALID_PARAMETER_VALUE", (problem, body)
            assert "row 1: " in body["message"] and problem in body["message"], body["message"]
            assert "row 0" not in body["message"]

        status, body = _post(url, [good, {**good, "history": [["Hi?", "hello"]]}])
        assert status == 200, body
        assert body["predictions"][0]["answer"] == first  # same pixels, same greedy answer
        assert proc.poll() is None
        # the model answers from memory: its download is gone (a SIGTERM skips atexit)
        assert list(server_tmp.iterdir()) == []
    finally:
        stop_server(proc)
    assert proc.poll() is not None
    assert list(server_tmp.iterdir()) == []


def _sphinx_dir(tokenizer, tmp_path: Path) -> Path:
    """LLaVA fused with a DINOv2 tower (SPHINX), assembled through the recipe factory."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    from components.model.build import build_stage_model, save_vlm
    from components.model.spec import ModelSpec
    from tests.components.model.helpers import SCHEDULES, saved_backbones

    saved_backbones("llava", len(tokenizer), tmp_path)
    tokenizer.save_pretrained(tmp_path / "lm")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                             image_size=28, patch_size=14)).save_pretrained(tmp_path / "dino")
    spec = ModelSpec(architecture="llava", vision=str(tmp_path / "vision"),
                     text=str(tmp_path / "lm"), fusion_vision=str(tmp_path / "dino"))
    model, processor, _ = build_stage_model(spec, seed=0, parent_dir=None, registered={},
                                            longest_edge=32, unfreeze=SCHEDULES["llava"],
                                            lora_rank=4)
    return save_vlm(model.eval(), processor, tmp_path / "vlm")


@pytest.mark.slow  # a server per architecture, ~30 s (make test-slow)
def test_every_architecture_answers_behind_the_server(home: Path, tokenizer, tmp_path: Path) -> None:
    """idefics3, llava, idefics2, idefics (Flamingo) and SPHINX-fused llava, each registered and
    served by `mlflow models serve` (all servers at once), answer a request."""
    from components.model.architectures import ARCHITECTURES
    from components.model.build import save_vlm
    from flows.commands.serve import free_port, start_server, stop_server, wait_until_ready
    from tests.components.model.helpers import build

    dirs = {}
    for arch in ARCHITECTURES:
        _, _, model, processor = build(arch, tokenizer, tmp_path / arch)
        dirs[arch] = save_vlm(model.eval(), processor, tmp_path / arch / "vlm")
    dirs["sphinx"] = _sphinx_dir(tokenizer, tmp_path / "sphinx")
    servers = {}
    try:
        for name, folder in dirs.items():
            with registry.start_run(f"train-{name}") as run_id:
                version = registry.register_hf_model(folder, f"vlm-serve-{name}", run_id=run_id, tags={})
            port = free_port()
            log = (tmp_path / f"{name}.log").open("wb")
            servers[name] = (start_server(f"models:/vlm-serve-{name}/{version}", port, stdout=log,
                                          stderr=subprocess.STDOUT), port)
        image = _png_b64(Image.new("RGB", (32, 32), (200, 30, 30)))
        for name, (proc, port) in servers.items():
            try:
                wait_until_ready(proc, port)
            except (RuntimeError, TimeoutError):
                pytest.fail(f"{name}: server did not start:\n{(tmp_path / f'{name}.log').read_text()[-3000:]}")
            status, body = _post(f"http://127.0.0.1:{port}/invocations",
                                 [{"image": image, "question": "What colour is it?", "max_new_tokens": 3}])
            assert status == 200, (name, body)
            assert isinstance(body["predictions"][0]["answer"], str), name
    finally:
        for proc, _ in servers.values():
            stop_server(proc)


def test_serve_parser_defaults_to_localhost(home: Path) -> None:
    from flows.commands.serve import add_serve_parser, serve_command, server_env
    from registry.serving_limits import LIMITS

    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--model", "models:/vlm-tiny@champion"])
    assert (args.model, args.port, args.host, args.timeout) == (
        "models:/vlm-tiny@champion", 5001, "127.0.0.1", LIMITS.request_timeout_s)
    cmd = serve_command(args.port, args.host)
    assert cmd[1:5] == ["-m", "uvicorn", "--factory", "registry.serving_app:build_app"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "5001"
    assert cmd[cmd.index("--limit-concurrency") + 1] == str(LIMITS.max_concurrent_requests)
    env = server_env(args.model, args.timeout)
    assert env["VLMFORGE_SERVE_MODEL_URI"] == "models:/vlm-tiny@champion"
    assert env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] == str(LIMITS.request_timeout_s)
    assert env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
