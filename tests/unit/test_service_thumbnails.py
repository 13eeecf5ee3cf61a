"""Thumbnails kept per sampled frame: made by the sources, written by the encode stage, read back."""

import io

import av
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from streamvl.config import IndexConfig, SamplingConfig
from streamvl.pipeline.thumbnails import Thumbnailer, frame_thumbnail, thumbnail_from_file, thumbnail_size
from streamvl.sources import open_source
from streamvl.storage.store import FRAMES, Store
from streamvl.storage.schema import frames_schema
from streamvl.types import StreamInfo
from tests.videos import level_for_index, make_video


def image(jpeg: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(jpeg))
    assert im.format == "JPEG"
    return im


def first_frame(path) -> av.VideoFrame:
    with av.open(str(path)) as c:
        return next(c.decode(video=0))


@pytest.mark.parametrize("size,sar,expected", [((640, 360), None, (256, 144)), ((320, 240), None, (256, 192)),
                                               ((720, 576), 64 / 45, (256, 144)), ((101, 77), None, (256, 196))])
def test_thumbnail_size_keeps_the_display_aspect(size, sar, expected):
    assert thumbnail_size(*size, 256, sar) == expected


def test_frame_thumbnails_are_jpegs_of_the_display_shape(tmp_path):
    wide = make_video(tmp_path / "wide.mp4", size=(640, 360), seconds=0.5)
    assert image(frame_thumbnail(first_frame(wide.path))).size == (256, 144)


@pytest.mark.parametrize("rotation, bright", [(90, "top"), (-90, "bottom")])
def test_frame_thumbnails_turn_as_the_model_frames_do(tmp_path, rotation, bright):
    turned = make_video(tmp_path / "turned.mp4", size=(320, 240), seconds=0.5, pattern="halves", rotation=rotation)
    im = np.asarray(image(frame_thumbnail(first_frame(turned.path), width=120)).convert("L"), np.float32)
    assert im.shape == (160, 120)  # shown portrait, as a player shows it
    top, bottom = im[:60].mean(), im[-60:].mean()
    assert (top - bottom > 150) if bright == "top" else (bottom - top > 150)  # as test_sources' rotation test


def test_sources_attach_one_thumbnail_per_frame_and_repeats_reuse_theirs(tmp_path):
    spec = make_video(tmp_path / "static.mp4", size=(320, 240), seconds=4.0, pattern="static")
    sampling = SamplingConfig(fps=4.0, size=32, thumbnail_width=160)
    with open_source(StreamInfo("s", str(spec.path)), sampling) as source:
        batches = list(source)
    frames = [b for b in batches if len(b)]
    thumbs = [t for b in frames for t in b.thumbs]
    repeat = np.concatenate([b.repeat for b in frames])
    assert len(thumbs) == sum(len(b) for b in frames) and repeat.any()
    assert all(image(t).size == (160, 120) for t in thumbs)
    for i in np.flatnonzero(repeat):  # a repeat frame carries the thumbnail of the frame it repeats
        assert thumbs[i] is thumbs[i - 1]
    off = SamplingConfig(fps=4.0, size=32, thumbnail_width=0)
    with open_source(StreamInfo("s", str(spec.path)), off) as source:
        assert all(b.thumbs is None for b in source)


def test_thumbnailer_survives_a_frame_it_cannot_scale():
    class Broken:
        width, height, rotation, sample_aspect_ratio = 0, 0, 0, None

        def reformat(self, **kw):
            raise ValueError("no")

    assert Thumbnailer(64)(Broken()) is None
    assert Thumbnailer(0)(Broken()) is None


def test_the_encode_stage_writes_the_thumbnail_column_and_old_tables_gain_it(tmp_path):
    from streamvl.pipeline.encode import EncodeStage

    spec = make_video(tmp_path / "a.mp4", size=(320, 240), seconds=3.0, pattern="moving")
    db = str(tmp_path / "db")
    store = Store(db)
    config = IndexConfig(db=db, model="streamvl-tiny@random:0", sampling={"fps": 2.0})
    stage = EncodeStage(config)
    old = pa.table({"stream_id": ["old"], "pts": [0.0], "wallclock": [None], "model": [stage.model.name],
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(stage.model.embed_dim, np.float32)),
                                                                   stage.model.embed_dim)},
                   schema=frames_schema(stage.model.embed_dim, stage.model.meta()))
    store.upsert(FRAMES, old)  # a frames table from before thumbnails
    sampling = config.sampling.model_copy(update={"size": stage.model.image_size})
    with open_source(StreamInfo("a", str(spec.path)), sampling) as source:
        for batch in source:
            rows, _, _ = stage.process([batch])
            store.upsert(FRAMES, rows)
    got = {r["stream_id"] + f"@{r['pts']:.1f}": r["thumbnail"] for r in Store(db).db.open_table(FRAMES).to_arrow().to_pylist()}
    assert got.pop("old@0.0") is None  # the old row kept, without a picture
    assert len(got) == 6 and all(image(j).size == (256, 192) for j in got.values())


def test_thumbnail_from_file_shows_the_frame_at_t(tmp_path):
    spec = make_video(tmp_path / "index.mp4", size=(320, 240), fps=25, seconds=4.0, gop=12)
    for t in (0.0, 1.0, 2.52, 3.9):
        im = np.asarray(image(thumbnail_from_file(spec.path, t)).convert("L"), np.float32)
        expected = level_for_index(int(round(t * 25)))
        assert abs(im.mean() - expected) < 6, (t, im.mean(), expected)
    from streamvl.errors import SourceError

    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(SourceError, match="t=1.00s"):
        thumbnail_from_file(tmp_path / "text.mp4", 1.0)
