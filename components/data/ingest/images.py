"""Safe image loading: paths confined to the images root, Pillow's bomb limit enforced,
sizes checked before pixels are decoded. Every failure is a :class:`Reject`.

An image given as a URL (``scheme://...``) is never downloaded: it is looked up under the
images root by :func:`url_file_names`, first ``sha1(url).hexdigest()`` + the URL path's
extension (lower-cased; the bare hex when the path has none), then the URL path's last
segment, percent-decoded (skipped when it is empty, ``.``/``..`` or holds a separator).
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import unquote, urlsplit

from PIL import Image, UnidentifiedImageError

from components.data.ingest.limits import Limits
from components.data.quarantine import Reject

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_EXTENSION = re.compile(r"^\.[a-z0-9]{1,5}$")


@dataclass(frozen=True)
class ImageRef:
    """An image as inline bytes, a path relative to the images root, or a URL resolved to
    a file under that root (:func:`url_file_names`)."""

    data: bytes | None = None
    path: str | None = None
    url: str | None = None

    def describe(self) -> str:
        if self.url is not None:
            return self.url
        return self.path if self.path is not None else f"<{len(self.data or b'')} bytes>"


def url_file_names(url: str) -> list[str]:
    """The file names a URL is looked up by, in order: sha1 hex + extension, then basename."""
    try:
        path = urlsplit(url).path
        digest = hashlib.sha1(url.encode("utf-8")).hexdigest()
    except (ValueError, UnicodeError) as e:  # e.g. an unclosed IPv6 bracket, a lone surrogate
        raise Reject("image_missing", f"{url!r} is not a usable URL: {e}") from None
    ext = posixpath.splitext(path)[1].lower()
    names = [digest + (ext if _EXTENSION.match(ext) else "")]
    base = unquote(posixpath.basename(path))
    if base not in ("", ".", "..") and not any(c in base for c in "/\\\x00"):
        names.append(base)
    return names


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
    """Opens :class:`ImageRef` s under ``root`` with side bounds ``[min_side, max_side]``;
    an image over ``max_bytes`` is refused (``over_limit``) before it is read."""

    root: Path | None
    min_side: int = Limits.min_side
    max_side: int = Limits.max_side
    max_bytes: int = Limits.max_member_bytes

    def read_bytes(self, ref: ImageRef) -> bytes:
        if ref.data is not None:
            self._check_size(len(ref.data), ref.describe())
            return ref.data
        if ref.url is not None:
            return self._file(self.resolve_url(ref.url))
        if ref.path is None:
            raise Reject("missing_field", "image has neither bytes nor path")
        check_relative(ref.path)
        return self._file(self._confined(ref.path))

    def _confined(self, relative: str) -> Path:
        """``relative`` under the root, resolved (links too) and still under it."""
        if self.root is None:
            raise Reject("image_missing", f"{relative!r}: no images directory given (--images)")
        root = self.root.resolve()
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise Reject("unsafe_path", f"{relative!r} resolves outside {root}")
        if not path.is_file():
            raise Reject("image_missing", f"{relative!r} not found under {root}")
        return path

    def resolve_url(self, url: str) -> str:
        """The first of :func:`url_file_names` that is a file under the root (no network)."""
        names = url_file_names(url)
        for name in names:
            try:
                self._confined(name)
            except Reject as r:
                if r.rule != "image_missing":
                    raise
                continue
            return name
        where = self.root.resolve() if self.root is not None else "(no --images)"
        raise Reject("image_missing", f"{url!r}: none of {names} under {where} "
                                      "(looked up by sha1(url)+ext, then by file name)")

    def _file(self, relative: str) -> bytes:
        path = self._confined(relative)
        self._check_size(path.stat().st_size, repr(relative))
        return path.read_bytes()

    def _check_size(self, size: int, name: str) -> None:
        if size > self.max_bytes:
            raise Reject("over_limit", f"image {name} bytes: {size} over "
                                       f"max_member_bytes={self.max_bytes}")

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
    """An image cell: bytes, a relative path, a URL, or a Hugging Face ``{"bytes", "path"}``
    struct."""
    if isinstance(value, (bytes, bytearray)):
        return ImageRef(data=bytes(value))
    if isinstance(value, str):
        return ImageRef(url=value) if URL.match(value) else ImageRef(path=value)
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return as_image_ref(value["bytes"], name)
        if value.get("path") is not None:
            return as_image_ref(value["path"], name)
        raise Reject("missing_field", f"{name}: image struct without bytes or path")
    raise Reject("wrong_type", f"{name} is {type(value).__name__}, expected bytes or a path")
