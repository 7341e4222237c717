"""Safe image loading: paths confined to the images root, Pillow's bomb limit enforced,
sizes checked before pixels are decoded. Every failure is a :class:`Reject`."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image, UnidentifiedImageError

from components.data.quarantine import Reject

MAX_FILE_BYTES = 64 << 20


@dataclass(frozen=True)
class ImageRef:
    """An image as inline bytes or as a path relative to the images root."""

    data: bytes | None = None
    path: str | None = None

    def describe(self) -> str:
        return self.path if self.path is not None else f"<{len(self.data or b'')} bytes>"


def check_relative(path: str) -> None:
    """Reject absolute paths, drive letters and any ``..`` component."""
    if not path:
        raise Reject("missing_field", "empty image path")
    if "\x00" in path:
        raise Reject("unsafe_path", f"NUL byte in path {path!r}")
    for pure in (PurePosixPath(path), PureWindowsPath(path)):
        if pure.is_absolute() or pure.anchor:
            raise Reject("unsafe_path", f"absolute path {path!r}")
        if ".." in pure.parts:
            raise Reject("unsafe_path", f"'..' in path {path!r}")


@dataclass(frozen=True)
class ImageLoader:
    """Opens :class:`ImageRef` s under ``root`` with side bounds ``[min_side, max_side]``."""

    root: Path | None
    min_side: int = 8
    max_side: int = 4096

    def read_bytes(self, ref: ImageRef) -> bytes:
        if ref.data is not None:
            return ref.data
        if ref.path is None:
            raise Reject("missing_field", "image has neither bytes nor path")
        check_relative(ref.path)
        if self.root is None:
            raise Reject("image_missing", f"{ref.path!r}: no images directory given (--images)")
        root = self.root.resolve()
        path = (root / ref.path).resolve()
        if not path.is_relative_to(root):
            raise Reject("unsafe_path", f"{ref.path!r} resolves outside {root}")
        if not path.is_file():
            raise Reject("image_missing", f"{ref.path!r} not found under {root}")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise Reject("image_size", f"{ref.path!r} is over {MAX_FILE_BYTES} bytes")
        return path.read_bytes()

    def load(self, ref: ImageRef) -> tuple[Image.Image, bytes]:
        """The decoded RGB image and its source bytes."""
        data = self.read_bytes(ref)
        if not data:
            raise Reject("image_decode", f"{ref.describe()}: empty image")
        return decode(data, ref.describe(), self.min_side, self.max_side), data


def decode(data: bytes, name: str, min_side: int, max_side: int) -> Image.Image:
    """Decode ``data``; a DecompressionBombWarning is an error, the size is checked first."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            w, h = image.size
            if not (min_side <= w <= max_side and min_side <= h <= max_side):
                raise Reject("image_size", f"{name}: {w}x{h} outside [{min_side}, {max_side}]")
            image.load()
            return image.convert("RGB")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise Reject("decompression_bomb", f"{name}: {e}") from None
        except Reject:
            raise
        except UnidentifiedImageError:
            raise Reject("image_decode", f"{name}: not a known image format") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise Reject("image_decode", f"{name}: {type(e).__name__}: {e}") from None


def as_image_ref(value: object, name: str) -> ImageRef:
    """An image cell: bytes, a relative path, or a Hugging Face ``{"bytes", "path"}`` struct."""
    if isinstance(value, (bytes, bytearray)):
        return ImageRef(data=bytes(value))
    if isinstance(value, str):
        return ImageRef(path=value)
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return as_image_ref(value["bytes"], name)
        if value.get("path") is not None:
            return as_image_ref(value["path"], name)
        raise Reject("missing_field", f"{name}: image struct without bytes or path")
    raise Reject("wrong_type", f"{name} is {type(value).__name__}, expected bytes or a path")
