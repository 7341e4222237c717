"""`vlmforge evaluate` suites on a registered tiny VLM: POPE, k-shot synthetic and official
VQA / caption / MCQ files, through a real Prefect flow run and a real MLflow store.

Per suite: metrics on the MLflow run and on the version (prefixed), a predictions table,
a Prefect markdown artifact; official results scored by `vlmforge score` give the very
numbers the evaluation recorded."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

import registry
from components.data.shards import write_shard
from components.data.synthetic.scenes import generate_caption, generate_vqa
from components.data.synthetic.text_tasks import generate as generate_text
from components.evaluation.runners import official_metrics, score_official
from components.evaluation.suites import (
    DEFAULT_SUITE,
    SuiteSpec,
    load_suite_config,
    parse_suites,
    resolve_suites,
)
from components.recipe import load_recipe
from flows.commands.evaluate import add_evaluate_parser, evaluate_command, parse_model_ref
from flows.commands.score import add_score_parser
from flows.stages.data import DataVersion
from flows.stages.evaluate import evaluate_flow
from registry.tracking import client

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SUITES = ["pope_small", "fewshot2", "val0", "vqa_small", "caps", "mcq_small"]


def _score_cli(argv: list[str]) -> dict:
    """`vlmforge score ...` through its own parser; the printed JSON."""
    parser = argparse.ArgumentParser(prog="vlmforge")
    add_score_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Official-format files (VQAv2 annotations + questions, COCO captions, MCQ items) with
    their images, and a suite config next to them."""
    root = tmp_path_factory.mktemp("official")
    (root / "images").mkdir()
    colours = ["red", "blue", "green"]
    for i, colour in enumerate(colours, start=1):
        Image.new("RGB", (48, 40), colour).save(root / "images" / f"{i}.png")
    anns = {"annotations": [
        {"question_id": 10 + i, "image_id": i, "question_type": "what color",
         "answer_type": "other", "answers": [{"answer": c, "answer_id": j + 1} for j in range(10)]}
        for i, c in enumerate(colours, start=1)] + [
        {"question_id": 20, "image_id": 1, "question_type": "is there", "answer_type": "yes/no",
         "answers": [{"answer": "yes", "answer_id": j + 1} for j in range(10)]}]}
    questions = {"questions": [
        {"question_id": a["question_id"], "image_id": a["image_id"],
         "question": "Is there a shape?" if a["question_id"] == 20 else "What colour is it?"}
        for a in anns["annotations"]]}
    captions = {"images": [{"id": i, "file_name": f"{i}.png"} for i in (1, 2)],
                "annotations": [{"image_id": i, "caption": f"a {colours[i - 1]} square."}
                                for i in (1, 2)]}
    items = [{"id": "m1", "question": "What colour is it?", "options": ["red", "blue"],
              "answer": "A", "image": "images/1.png"},
             {"id": "m2", "question": "Which is a shape?", "options": ["dog", "circle", "tree"],
              "answer": 1}]
    (root / "anns.json").write_text(json.dumps(anns))
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "captions.json").write_text(json.dumps(captions))
    (root / "items.jsonl").write_text("\n".join(json.dumps(it) for it in items) + "\n")
    return root


@pytest.fixture(scope="module")
def judge_dir(tokenizer, tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    out = tmp_path_factory.mktemp("judge")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def suite_config(files: Path, judge_dir: Path) -> Path:
    config = {"suites": {
        "pope_small": {"kind": "pope", "max_images": 4},
        "fewshot2": {"kind": "synthetic", "shots": 2},
        "val0": {"kind": "synthetic", "split": "val"},
        "vqa_small": {"kind": "vqa", "annotations": "anns.json", "questions": "questions.json",
                      "images": "images", "image_file": "{image_id}.png",
                      "judge": {"model": str(judge_dir), "max_new_tokens": 4}},
        "caps": {"kind": "caption", "annotations": "captions.json", "images": "images"},
        "mcq_small": {"kind": "mcq", "items": "items.jsonl"},
    }}
    path = files / "suites.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, backbones_module, tokenizer):
    """A registered tiny VLM, a tiny data version (test + val shards) and the recipe."""
    import uuid

    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.build import save_vlm

    home = tmp_path_factory.mktemp("store")
    registry.configure(home)
    work = tmp_path_factory.mktemp("work")
    model = assemble_idefics3(*backbones_module, tokenizer, scale_factor=2).eval()
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8,
                                scale_factor=2)
    vlm = save_vlm(model, processor, work / "vlm")
    name = f"vlm-eval-{uuid.uuid4().hex[:6]}"
    with registry.start_run("train") as run_id:
        version = registry.register_hf_model(vlm, name, run_id=run_id, tags={})
    shards = work / "ws" / "data" / "shards"
    for split, n in (("test", 4), ("val", 4)):
        (shards / split).mkdir(parents=True)
        samples = ([generate_caption(0, i, split) for i in range(n)]
                   + [generate_vqa(0, i, split) for i in range(2 * n)]
                   + [generate_text(0, i, split) for i in range(2)])
        write_shard(samples, shards / split / "000000.tar")
    data = DataVersion(str(work / "ws"), "tinydata", {}, {})
    recipe = load_recipe(CONFIGS / "micro.yaml").model_copy(update={"registered_model": name})
    recipe.evaluate.max_new_tokens = 3
    return recipe, name, version, data


@pytest.fixture(scope="module")
def backbones_module(tokenizer):
    import torch

    from components.model.backbones import load_text_backbone, load_vision_backbone

    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2)
    return load_vision_backbone(vision), load_text_backbone(text, vocab_size=len(tokenizer))


@pytest.fixture(scope="module")
def evaluated(setup, suite_config):
    recipe, name, version, data = setup
    specs = load_suite_config(suite_config)
    first = evaluate_flow(recipe, version, data, suites=SUITES, suite_specs=specs, model_name=name)
    second = evaluate_flow(recipe, version, data, suites=SUITES, suite_specs=specs,
                           model_name=name)
    return first, second


def test_every_suite_records_prefixed_metrics_on_its_run_and_the_version(setup, evaluated):
    _, name, version, _ = setup
    first, _ = evaluated
    assert list(first.benchmarks) == SUITES
    recorded = registry.read_metrics(name, version)
    for suite, b in first.benchmarks.items():
        assert b.metrics and all(k.startswith(f"{suite}_") for k in b.metrics)
        assert {k: recorded[k] for k in b.metrics} == pytest.approx(b.metrics)
        run = registry.get_run(b.run_id)
        assert run["status"] == "FINISHED" and run["tags"]["suite"] == suite
        assert run["metrics"] == pytest.approx(b.metrics)
        artifacts = {a.path for a in client().list_artifacts(b.run_id, suite)}
        assert f"{suite}/predictions.json" in artifacts
    m = first.benchmarks["pope_small"].metrics
    for sampler in ("random", "popular", "adversarial"):
        for metric in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
            assert 0.0 <= m[f"pope_small_{sampler}_{metric}"] <= 1.0
    assert "fewshot2_vqa_accuracy" in first.benchmarks["fewshot2"].metrics
    _assert_text_nll_of_the_val_split(setup, first.benchmarks["val0"].metrics)
    assert {"vqa_small_accuracy", "vqa_small_accuracy_other", "vqa_small_accuracy_yes_no",
            "vqa_small_judge_score"} <= set(first.benchmarks["vqa_small"].metrics)
    judged = first.benchmarks["vqa_small"].run_id  # its frozen judge record
    assert {a.path for a in client().list_artifacts(judged, "vqa_small/judge")} == {
        "vqa_small/judge/judge.json", "vqa_small/judge/predictions.jsonl",
        "vqa_small/judge/judgments.jsonl"}
    assert registry.get_run(judged)["tags"]["judge_record"] == "vqa_small/judge"
    assert {"caps_CIDEr", "caps_Bleu_4", "caps_ROUGE_L"} <= set(first.benchmarks["caps"].metrics)
    assert "promotion gate not run" in first.reason and not first.promoted
    assert registry.get_alias(name, "champion") is None


def _assert_text_nll_of_the_val_split(setup, metrics: dict[str, float]) -> None:
    """A zero-shot synthetic suite scores text-only retention as the default suite does: the
    likelihood of the reference answers of its split's text-only samples."""
    from components.data.shards import read_samples
    from components.evaluation.answer_nll import answer_nll
    from components.evaluation.synthetic_suite import as_questions
    from components.model.build import load_vlm
    from components.model.chat import ChatEncoder

    recipe, name, version, data = setup
    model, processor = load_vlm(registry.hf_model_dir(name, version))
    samples = as_questions(list(read_samples(sorted((data.shards / "val").glob("*.tar")))))
    text = [s for s in samples if s.record["task"] == "text"]
    assert text
    expected = answer_nll(model.eval(), ChatEncoder(processor, recipe.model.max_length), text,
                          batch_size=recipe.evaluate.batch_size)
    assert metrics["val0_text_answer_nll"] == pytest.approx(expected, rel=1e-4)


def test_official_results_rescored_by_vlmforge_score_give_the_same_numbers(
        setup, evaluated, files, tmp_path):
    first, _ = evaluated
    commands = {
        "vqa_small": ("vqa", ["--annotations", str(files / "anns.json"),
                              "--questions", str(files / "questions.json")]),
        "caps": ("caption", ["--annotations", str(files / "captions.json"),
                             "--metrics", "BLEU", "ROUGE_L", "CIDEr"]),
        "mcq_small": ("mcq", ["--items", str(files / "items.jsonl")]),
    }
    for suite, (kind, extra) in commands.items():
        results = client().download_artifacts(
            first.benchmarks[suite].run_id, f"{suite}/results.json", str(tmp_path))
        scores = _score_cli(["score", kind, "--results", results, *extra])
        expected = {f"{suite}_{k}": v for k, v in official_metrics(kind, scores).items()}
        got = {k: v for k, v in first.benchmarks[suite].metrics.items()
               if not k.startswith(f"{suite}_judge_")}
        assert got == expected  # identical, not approximately equal


def test_a_hand_written_results_file_scores_the_same_both_ways(files, tmp_path):
    spec = SuiteSpec(kind="vqa", annotations=str(files / "anns.json"),
                     questions=str(files / "questions.json"), images=str(files / "images"))
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"question_id": 11, "answer": "red"},
                                   {"question_id": 12, "answer": "green"},
                                   {"question_id": 13, "answer": "green"},
                                   {"question_id": 20, "answer": "yes"}]))
    ours = score_official("vqa", results, spec)
    cli = _score_cli(["score", "vqa", "--results", str(results), "--annotations",
                      str(files / "anns.json"), "--questions", str(files / "questions.json")])
    assert json.loads(json.dumps(ours)) == cli
    assert official_metrics("vqa", ours) == {"accuracy": 75.0, "accuracy_other": 66.67,
                                             "accuracy_yes_no": 100.0}


def test_each_suite_publishes_a_prefect_markdown_report(setup, evaluated):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _, name, version, _ = setup

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(like_=f"evaluate-{name}")))

    artifacts = asyncio.run(read())
    keys = {a.key for a in artifacts}
    for suite in SUITES:
        assert f"evaluate-{name}-{suite}".replace("_", "-") in keys
    report = next(a for a in artifacts if a.key.endswith("vqa-small"))
    assert report.type == "markdown" and f"v{version}" in report.data
    assert "| metric | value |" in report.data and "vqa_small_accuracy" in report.data


def test_unchanged_suites_are_not_rerun(evaluated):
    first, second = evaluated
    assert all(b.cached for b in second.benchmarks.values())
    assert not any(b.cached for b in first.benchmarks.values())
    for suite in SUITES:
        assert second.benchmarks[suite].metrics == pytest.approx(first.benchmarks[suite].metrics)
        assert second.benchmarks[suite].run_id == first.benchmarks[suite].run_id


def test_evaluate_command_takes_a_models_uri_with_an_alias(setup, evaluated, suite_config,
                                                           capsys):
    recipe, name, version, data = setup
    parser = argparse.ArgumentParser(prog="vlmforge")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["evaluate", "--model", f"models:/{name}@staging", "--suite",
                              "mcq_small", "--suite-config", str(suite_config)])
    assert args.suites == ["mcq_small"] and args.recipe == "configs/tiny.yaml"
    assert evaluate_command(recipe, data, args) == 2
    assert "has no version with alias 'staging'" in capsys.readouterr().err
    registry.set_alias(name, "staging", version)
    assert evaluate_command(recipe, data, args) == 0
    out = capsys.readouterr().out
    assert f"{name} v{version}: mcq_small (recorded scores)" in out
    assert "mcq_small_accuracy" in out and "promotion gate not run" in out


def test_model_refs_and_suite_config_errors(tmp_path):
    assert parse_model_ref(None, "vlm") == ("vlm", None, None)
    assert parse_model_ref("7", "vlm") == ("vlm", "7", None)
    assert parse_model_ref("models:/vlm-tiny@champion", "x") == ("vlm-tiny", None, "champion")
    assert parse_model_ref("models:/vlm-tiny/3", "x") == ("vlm-tiny", "3", None)
    for bad in ("champion", "models:/a/b", "models:/a/3@x", "models:/"):
        with pytest.raises(ValueError, match="--model"):
            parse_model_ref(bad, "x")
    with pytest.raises(ValueError, match="unknown suite\\(s\\) \\['nope'\\]"):
        resolve_suites(["nope"])
    assert list(resolve_suites(None)) == [DEFAULT_SUITE]
    with pytest.raises(ValueError, match="suite 'textvqa': spec: Value error, a vqa suite "
                                         "needs annotations, images"):
        parse_suites({"textvqa": {"kind": "vqa"}}, "suites.yaml", tmp_path)
    with pytest.raises(ValueError, match="'synthetic' is the built-in default suite"):
        parse_suites({"synthetic": {"kind": "synthetic", "shots": 2}}, "s.yaml", tmp_path)
    with pytest.raises(ValueError, match="suite name 'Bad-Name'"):
        parse_suites({"Bad-Name": {"kind": "pope"}}, "s.yaml", tmp_path)
    with pytest.raises(ValueError, match="suite 'p': sampler: Extra inputs are not permitted"):
        parse_suites({"p": {"kind": "pope", "sampler": "random"}}, "s.yaml", tmp_path)
    spec = parse_suites({"m": {"kind": "mcq", "items": "items.jsonl"}}, "s.yaml", tmp_path)["m"]
    assert spec.items == str(tmp_path / "items.jsonl")
