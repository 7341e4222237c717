"""3. PNG, JPEG and WEBP only, decided from the first bytes before any decoding; the pixel count
is read from the header before decoding: an ICO (Pillow decodes an ICO whole to learn its
size) or a decompression bomb costs the server nothing."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from flows.bench.soak import ico_bomb, png_bomb, tree_rss
from registry.serving_input import RequestError, decode_image, read_image_header
from registry.serving_limits import LIMITS
from tests.security.helpers import GOOD_ROW, Server

MIB = 1024 * 1024


def _file(fmt: str, size: tuple[int, int], mode: str = "RGB", **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (10, 200, 30, 255)[: len(mode)]).save(buf, format=fmt, **save)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, mode, save", [
    ("PNG", "RGB", {}), ("PNG", "RGBA", {}), ("PNG", "L", {}),
    ("JPEG", "RGB", {}), ("JPEG", "RGB", {"progressive": True}), ("JPEG", "L", {}),
    ("WEBP", "RGB", {"lossless": False}), ("WEBP", "RGB", {"lossless": True}),
    ("WEBP", "RGBA", {"lossless": False, "exif": b"Exif\x00\x00"}),  # the extended (VP8X) layout
])
def test_header_size_matches_what_pillow_decodes(fmt: str, mode: str, save: dict) -> None:
    data = _file(fmt, (37, 23), mode, **save)
    header = read_image_header(data)
    assert (header.format, header.width, header.height) == (fmt, 37, 23)
    assert decode_image(data, header).size == (37, 23)


@pytest.mark.parametrize("fmt", ["ICO", "GIF", "BMP", "TIFF", "PPM", "TGA"])
def test_other_formats_are_refused_from_their_first_bytes(fmt: str) -> None:
    with pytest.raises(RequestError, match="not a PNG, JPEG or WEBP file"):
        read_image_header(_file(fmt, (16, 16)))


def test_pillow_reads_only_the_format_the_header_named() -> None:
    header = read_image_header(_file("PNG", (16, 16)))
    with pytest.raises(RequestError, match="not a decodable PNG"):
        decode_image(_file("JPEG", (16, 16)), header)


def _peak_growth(tiny_server: Server, rows: list[dict]) -> tuple[int, dict, int]:
    before = tree_rss(tiny_server.proc.pid, "VmHWM")
    status, body = tiny_server.post_rows(rows)
    return status, body, tree_rss(tiny_server.proc.pid, "VmHWM") - before


def test_an_ico_bomb_is_refused_before_pillow_sees_it(tiny_server: Server) -> None:
    bomb = ico_bomb(png_bomb(12_000))  # 17 kB; 144M pixels once decoded
    status, body, growth = _peak_growth(tiny_server, [{**GOOD_ROW,
                                                  "image": base64.b64encode(bomb).decode()}])
    assert status == 400
    assert "row 0: 'image' is not a PNG, JPEG or WEBP file" in body["message"]
    assert growth < 32 * MIB, growth  # decoding it would take over 130 MiB


def test_a_pixel_bomb_is_refused_from_its_header(tiny_server: Server) -> None:
    side = 16_384  # 268M pixels in 33 kB
    status, body, growth = _peak_growth(
        tiny_server, [{**GOOD_ROW, "image": base64.b64encode(png_bomb(side)).decode()}])
    assert status == 400
    assert f"image is {side}x{side} = {side * side} pixels" in body["message"]
    assert f"over the limit of {LIMITS.max_image_pixels} pixels (max_image_pixels)" in body[
        "message"]
    assert growth < 32 * MIB, growth


def test_every_allowed_format_is_answered(tiny_server: Server) -> None:
    rows = [{**GOOD_ROW, "image": base64.b64encode(_file(fmt, (40, 30))).decode()}
            for fmt in ("PNG", "JPEG", "WEBP")]
    status, body = tiny_server.post_rows(rows)
    assert status == 200 and len(body["predictions"]) == 3, body
