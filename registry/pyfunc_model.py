"""MLflow pyfunc wrapper around a saved transformers image-text-to-text model.

Imports mlflow at module level (it subclasses PythonModel): import this module lazily.
"""

from __future__ import annotations

import base64
import io
import os
from typing import Any

import mlflow.pyfunc
import pandas as pd

HF_ARTIFACT = "hf_model"
DEFAULT_MAX_NEW_TOKENS = 64


def load_image(value: Any) -> Any:
    """A PIL RGB image from a file path, raw bytes, or (data-URL) base64 string."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    elif isinstance(value, str) and len(value) < 4096 and os.path.isfile(value):
        with Image.open(value) as img:
            return img.convert("RGB")
    elif isinstance(value, str):
        data = base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value)
    else:
        raise TypeError(f"unsupported image value of type {type(value).__name__}")
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


class VLMPyfunc(mlflow.pyfunc.PythonModel):
    """Answers ``question`` about ``image`` for each row with greedy decoding."""

    def __init__(self) -> None:
        self.model: Any = None
        self.processor: Any = None

    def load_context(self, context: Any) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = context.artifacts[HF_ARTIFACT]
        self.processor = AutoProcessor.from_pretrained(path)
        self.model = AutoModelForImageTextToText.from_pretrained(path).eval()

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        default_tokens = int((params or {}).get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        answers = []
        for row in model_input.to_dict("records"):
            tokens = row.get("max_new_tokens")
            tokens = default_tokens if tokens is None or pd.isna(tokens) else int(tokens)
            answers.append(self.answer(load_image(row["image"]), str(row["question"]), tokens))
        return pd.DataFrame({"answer": answers})

    def answer(self, image: Any, question: str, max_new_tokens: int) -> str:
        """Greedy answer for one image/question pair; only new tokens are decoded."""
        import torch

        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        ]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(text=prompt, images=[[image]], return_tensors="pt")
        # BatchFeature.to casts only floating tensors (pixel values) to the model dtype.
        inputs = inputs.to(self.model.device, dtype=self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()
