"""Hub-layout backbones through the recipe's `from_pretrained` path: a dual-tower SigLIP
checkpoint as the vision backbone, CLIP towers saved with their own image processor (their
mean/std reach every processor, and a later stage's), and a Llama-style LM with tied
embeddings and a foreign tokenizer (other special-token names, no pad token, a BOS added on
encode, its own ChatML template) that a stage trains and plain transformers reloads.

Every backbone is built from a tiny config and saved with `save_pretrained`: no downloads."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from components.data.corpus import generate_samples
from components.data.shards import write_shard
from components.data.tokenizer import CHAT_TEMPLATE
from components.model.backbones import load_text_backbone, load_vision_backbone
from components.model.build import build_stage_model, save_vlm
from components.model.chat import IGNORE, ChatEncoder
from components.model.freeze import merge_lora
from components.model.tokens import IMAGE_TOKENS, prepare_tokenizer, template_fits
from components.recipe import parse_stage
from components.training.stage import run_stage
from tests.components.model.helpers import SCHEDULES, model_spec

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # DINOv2's
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
             image_size=32, patch_size=8)
# ChatML as SmolLM2 ships it: turns end with <|im_end|>, no <image>, string contents only
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXTS = ["user\nWhat colour is the circle?", "assistant\nred", "Is there a blue square?",
         "assistant\nyes", "Describe the image.", "a red circle at the top left."] * 20


def foreign_tokenizer() -> PreTrainedTokenizerFast:
    """A Llama-style byte-level BPE: <s>/</s>/<unk>, no pad token, <s> added on every encode."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(TEXTS, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", backend.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    tokenizer.chat_template = CHATML
    return tokenizer


def tied_lm(tokenizer) -> LlamaForCausalLM:
    """Llama with tied input/output embeddings (as SmolLM2), no GQA (Idefics v1 can hold it)."""
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None, initializer_range=0.2))


def clip_processor(mean, std) -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                              image_mean=mean, image_std=std)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Backbone directories in hub layout; ``dual`` and ``lm`` are kept in memory to compare."""
    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    dual = SiglipModel(SiglipConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=TOWER))
    dual.save_pretrained(root / "siglip-dual")  # no image processor: 0.5/0.5
    clip = CLIPVisionModel(CLIPVisionConfig(**TOWER))
    clip.save_pretrained(root / "clip")
    clip_processor(OPENAI_MEAN, OPENAI_STD).save_pretrained(root / "clip")
    clip.save_pretrained(root / "clip-bare")
    siglip = SiglipVisionModel(SiglipVisionConfig(**TOWER))  # idefics3/2 hold SigLIP towers only
    siglip.save_pretrained(root / "siglip-openai")
    clip_processor(OPENAI_MEAN, OPENAI_STD).save_pretrained(root / "siglip-openai")
    tokenizer = foreign_tokenizer()
    lm = tied_lm(tokenizer)
    lm.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    return {"root": root, "dual": dual, "lm": lm}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-shards")
    write_shard(generate_samples("scenes_vqa", 0, "train", 0, 16, image_size=32),
                root / "train" / "scenes_vqa-0000.tar")
    write_shard(generate_samples("scenes_vqa", 0, "val", 0, 4, image_size=32),
                root / "val" / "scenes_vqa-0000.tar")
    return root


def stage_model(hub, arch: str, vision: str, parent_dir=None):
    """What a recipe's stage starts from, with backbones given as directories."""
    spec = model_spec(arch, vision=str(hub["root"] / vision), text=str(hub["root"] / "lm"))
    return build_stage_model(spec, seed=0, parent_dir=parent_dir, registered={}, longest_edge=32,
                             unfreeze=SCHEDULES[arch], lora_rank=4)


def vision_tower(model) -> torch.nn.Module:
    """The VLM's copy of the tower (Idefics2/3: ``vision_model``, LLaVA: ``vision_tower``)."""
    inner = model.model
    return inner.vision_model if hasattr(inner, "vision_model") else inner.vision_tower


def text_embeddings_and_head(model) -> tuple[torch.Tensor, torch.Tensor]:
    return model.get_input_embeddings().weight, model.get_output_embeddings().weight


def colour_chat() -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
            {"role": "user", "content": [{"type": "text", "text": "Is there a blue square?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "yes"}]}]


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def openai_pixels(image: Image.Image, mean=OPENAI_MEAN, std=OPENAI_STD) -> torch.Tensor:
    """(x/255 - mean) / std per channel, by hand."""
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def noise_image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


# --- the foreign tokenizer and the tied LM ---------------------------------------------


def test_a_foreign_tokenizer_is_made_vlm_ready_and_the_tied_lm_grows_with_it(hub):
    saved_lm = hub["lm"]
    tokenizer = AutoTokenizer.from_pretrained(hub["root"] / "lm")
    assert tokenizer.pad_token is None and "<image>" not in tokenizer.get_vocab()
    lm = load_text_backbone(hub["root"] / "lm")
    original = saved_lm.config.vocab_size
    prepare_tokenizer(tokenizer, lm)

    for token in IMAGE_TOKENS + ["<|im_start|>"]:  # each one token of its own
        assert tokenizer.tokenize(token) == [token]
    assert tokenizer.pad_token == "</s>" and tokenizer.eos_token == "<end_of_utterance>"
    assert tokenizer("a red circle").input_ids == tokenizer("a red circle", add_special_tokens=False).input_ids
    assert "<image>" in tokenizer.chat_template and "<|im_end|>" not in tokenizer.chat_template

    embeddings, head = text_embeddings_and_head(lm)
    assert embeddings.shape[0] == len(tokenizer) == lm.config.vocab_size > original
    assert head is embeddings  # resizing kept the tie
    assert torch.equal(embeddings[:original], saved_lm.model.embed_tokens.weight)
    resized = {"model.embed_tokens.weight", "lm_head.weight"}
    for name, weight in saved_lm.state_dict().items():
        if name not in resized:
            assert torch.equal(lm.state_dict()[name], weight), name


# ChatML with <image> placeholders, but turns still end with <|im_end|>: labels would run on
CHATML_WITH_IMAGES = CHATML.replace("{{ m['content'] }}", "{% for c in m['content'] %}{% if c['type'] "
                                    "== 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}")
# what ChatEncoder reads, without the BOS: a template of the LM's own that fits is kept
FITTING = CHAT_TEMPLATE.replace("{{ bos_token }}", "")


@pytest.mark.parametrize("template,kept", [(CHATML, False), (CHATML_WITH_IMAGES, False),
                                           (FITTING, True), (None, False)])
def test_a_chat_template_is_kept_only_when_chat_encoder_can_mask_it(hub, template, kept):
    tokenizer = AutoTokenizer.from_pretrained(hub["root"] / "lm")
    tokenizer.chat_template = template
    prepare_tokenizer(tokenizer, load_text_backbone(hub["root"] / "lm"))
    assert tokenizer.chat_template == (template if kept else CHAT_TEMPLATE)
    assert template_fits(tokenizer)


def test_the_projects_own_tokenizer_passes_unchanged(tokenizer, backbones):
    own, lm = copy.deepcopy(tokenizer), backbones[1]
    before = (own.get_vocab(), own.chat_template, own.pad_token, own.eos_token, own.bos_token)
    rows = lm.get_input_embeddings().weight.clone()
    prepare_tokenizer(own, lm)
    assert (own.get_vocab(), own.chat_template, own.pad_token, own.eos_token, own.bos_token) == before
    assert torch.equal(lm.get_input_embeddings().weight, rows)


@pytest.mark.parametrize("arch", ["idefics3", "llava", "idefics"])
def test_the_vlm_keeps_the_tie_and_labels_only_the_answers(hub, arch):
    vision = "clip" if arch == "idefics" else "siglip-dual"
    model, processor, _ = stage_model(hub, arch, vision)
    embeddings, head = text_embeddings_and_head(model)
    assert head is embeddings
    assert torch.equal(embeddings[: hub["lm"].config.vocab_size], hub["lm"].model.embed_tokens.weight)

    tokenizer = processor.tokenizer
    encoder = ChatEncoder(processor, max_length=512)
    for images in ([noise_image()], []):
        item = encoder.encode(colour_chat(), images)
        assert item.input_ids[0] == tokenizer.bos_token_id != item.input_ids[1]  # one BOS
        labelled = [t for t in item.labels if t != IGNORE]
        end = [tokenizer.eos_token_id]
        assert labelled == token_ids(tokenizer, "red") + end + token_ids(tokenizer, "yes") + end
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<end_of_utterance>")


# --- vision towers in hub layout --------------------------------------------------------


@pytest.mark.parametrize("arch", ["idefics3", "llava"])
def test_a_dual_tower_siglip_checkpoint_gives_its_vision_weights_exactly(hub, arch):
    dual_vision = hub["dual"].vision_model.state_dict()
    tower = load_vision_backbone(hub["root"] / "siglip-dual")
    assert isinstance(tower, SiglipVisionModel)
    loaded = {k.removeprefix("vision_model."): v for k, v in tower.state_dict().items()}
    assert set(loaded) == set(dual_vision)
    assert all(torch.equal(loaded[k], dual_vision[k]) for k in dual_vision)

    model, processor, _ = stage_model(hub, arch, "siglip-dual")
    inside = {k.removeprefix("vision_model."): v for k, v in vision_tower(model).state_dict().items()}
    kept = {k for k in dual_vision if not (arch == "idefics3" and k.startswith("head."))}
    assert set(inside) == kept  # Idefics3 drops the pooling head, LLaVA keeps the whole tower
    assert all(torch.equal(inside[k], dual_vision[k]) for k in kept)
    assert list(processor.image_processor.image_mean) == [0.5] * 3  # saved without a processor


def test_a_checkpoint_missing_weights_is_refused_not_filled_at_random(hub, tmp_path):
    untied = LlamaConfig(**{**hub["lm"].config.to_dict(), "tie_word_embeddings": False})
    LlamaModel(untied).save_pretrained(tmp_path / "no-head")  # the decoder alone
    with pytest.raises(ValueError, match="weights missing for LlamaForCausalLM"):
        load_text_backbone(tmp_path / "no-head")


@pytest.mark.parametrize("arch,vision", [("idefics3", "siglip-openai"), ("llava", "clip"),
                                         ("idefics", "clip")])
def test_the_towers_own_normalisation_reaches_the_processors(hub, arch, vision, tmp_path):
    model, processor, _ = stage_model(hub, arch, vision)
    assert processor.image_processor.image_mean == pytest.approx(OPENAI_MEAN)
    assert processor.image_processor.image_std == pytest.approx(OPENAI_STD)
    image = noise_image(1)
    pixels = ChatEncoder(processor, max_length=512).encode(colour_chat(), [image]).pixel_values
    expected = openai_pixels(image)
    assert pixels.shape[-3:] == expected.shape
    assert torch.allclose(pixels.reshape(-1, *expected.shape)[-1], expected, atol=1e-4)

    merge_lora(model)  # a later stage keeps the normalisation its parent was saved with
    save_vlm(model, processor, tmp_path / "vlm")
    _, later, _ = stage_model(hub, arch, vision, parent_dir=tmp_path / "vlm")
    assert later.image_processor.image_mean == pytest.approx(OPENAI_MEAN)
    assert later.image_processor.image_std == pytest.approx(OPENAI_STD)


@pytest.mark.parametrize("arch", ["llava", "idefics"])
def test_a_tower_saved_without_an_image_processor_gets_half_and_half(hub, arch):
    _, processor, _ = stage_model(hub, arch, "clip-bare")
    assert list(processor.image_processor.image_mean) == [0.5] * 3
    assert list(processor.image_processor.image_std) == [0.5] * 3


@pytest.mark.parametrize("secondary_stats", [IMAGENET, None])
def test_sphinx_fusion_renormalises_the_clip_pixels_for_the_second_tower(hub, secondary_stats, tmp_path):
    torch.manual_seed(0)
    dino = Dinov2Model(Dinov2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=32, patch_size=8)).eval()  # same 4x4 grid: no resizing
    dino.save_pretrained(tmp_path / "dino")
    if secondary_stats is not None:
        clip_processor(*secondary_stats).save_pretrained(tmp_path / "dino")
    spec = model_spec("llava", vision=str(hub["root"] / "clip"), text=str(hub["root"] / "lm"),
                      fusion_vision=str(tmp_path / "dino"))
    model, processor, _ = build_stage_model(spec, seed=0, parent_dir=None, registered={},
                                            longest_edge=32, unfreeze=SCHEDULES["llava"], lora_rank=4)
    image = noise_image(2)
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixels[0], openai_pixels(image), atol=1e-4)  # the primary's stats
    with torch.no_grad():
        fused = model.model.vision_tower.eval()(pixel_values=pixels).last_hidden_state[..., 32:]
        own = openai_pixels(image, *(secondary_stats or ([0.5] * 3, [0.5] * 3)))
        expected = dino(pixel_values=own[None]).last_hidden_state[:, 1:]  # CLS dropped
    assert torch.allclose(fused, expected, atol=1e-4)


# --- a stage trains the hub VLM; plain transformers reloads it ---------------------------


@pytest.mark.parametrize("arch,vision", [("idefics3", "siglip-dual"), ("llava", "clip")])
def test_a_stage_trains_the_hub_vlm_and_plain_transformers_reloads_it(hub, shards, arch, vision,
                                                                      tmp_path):
    model, processor, _ = stage_model(hub, arch, vision)
    stage = parse_stage(dict(name="s", kind="sft", sources=["scenes_vqa"], longest_edge=32,
                             unfreeze=SCHEDULES[arch], lora_rank=4,
                             train={"steps": 3, "batch_size": 2, "log_every": 1, "warmup_steps": 1,
                                    "lr": 3e-3}))
    run = run_stage(model, processor, stage, shards, seed=0, max_length=512)
    losses = [h["loss"] for h in run.result.history]
    assert len(losses) == 3 and run.skipped == 0
    assert all(np.isfinite(losses)) and losses[-1] != losses[0]

    merge_lora(model)
    out = save_vlm(model, processor, tmp_path / "vlm")
    saved = load_file(out / "model.safetensors")
    assert not any(k.endswith("lm_head.weight") for k in saved)  # tied: stored once
    reloaded = AutoModelForImageTextToText.from_pretrained(out).eval()
    reprocessor = AutoProcessor.from_pretrained(out)
    embeddings, head = text_embeddings_and_head(reloaded)
    assert head is embeddings and torch.equal(embeddings, model.get_input_embeddings().weight)
    trained = model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in reloaded.state_dict().items())
    assert reprocessor.image_processor.image_mean == pytest.approx(processor.image_processor.image_mean)
    tokenizer = reprocessor.tokenizer
    assert tokenizer.eos_token == "<end_of_utterance>" and tokenizer.pad_token == "</s>"

    prompt = reprocessor.apply_chat_template(colour_chat()[:1], add_generation_prompt=True)
    inputs = reprocessor(text=prompt, images=[[noise_image()]], return_tensors="pt")
    assert (inputs["input_ids"][0] == tokenizer.bos_token_id).sum() == 1
    with torch.no_grad():
        generated = reloaded.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    assert isinstance(reprocessor.batch_decode(generated[:, inputs["input_ids"].shape[1]:])[0], str)
