"""Folder discovery indexes what a named file would (videos, GIFs, images) or names what it skipped;
`scan` lets every input fail alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamvl.config import SamplingConfig
from streamvl.errors import ConfigError, DecodeError, SourceError
from streamvl.sources import expand_sources, open_source, scan, stream_id_for
from streamvl.sources.discover import IMAGE_EXTENSIONS, SKIPPED_NAMES_SHOWN
from streamvl.types import StreamInfo
from tests.videos import make_audio_only, make_text_as_mp4, make_video, make_zero_byte

Image = pytest.importorskip("PIL.Image")  # pillow comes with torchvision; the writer of the test images
_MODE = {".xbm": "1", ".pbm": "1", ".pgm": "L"}


def write_image(path: Path, frames: int = 1) -> Path:
    rng = np.random.default_rng(len(path.name))
    images = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).convert(_MODE.get(path.suffix, "RGB"))
              for _ in range(frames)]
    if frames > 1:
        images[0].save(path, save_all=True, append_images=images[1:], duration=250, loop=0)
    else:
        images[0].save(path)
    return path


def decoded_frames(uri: str, fps: float = 1.0) -> int:
    with open_source(StreamInfo(stream_id_for(uri), uri), SamplingConfig(fps=fps, size=32)) as source:
        return sum(len(batch) for batch in source)


@pytest.mark.parametrize("ext", sorted(IMAGE_EXTENSIONS))
def test_every_image_extension_is_found_in_a_folder_and_decodes(tmp_path, ext):
    folder = tmp_path / "folder"
    folder.mkdir()
    path = write_image(folder / f"picture{ext}")
    found = scan([str(tmp_path / "folder")])
    assert [s.uri for s in found.streams] == [str(path)] and not found.failed and not found.notes and not found.warnings
    assert decoded_frames(str(path)) == 1


def test_animations_are_found_and_sampled_by_time(tmp_path):
    gif = write_image(tmp_path / "anim.gif", frames=8)  # 8 x 250 ms
    apng = write_image(tmp_path / "anim.apng", frames=8)
    (tmp_path / "nested").mkdir()
    video = make_video(tmp_path / "nested" / "clip.mp4", seconds=2.0, size=(64, 48)).path
    found = scan([str(tmp_path)])
    assert [Path(s.uri).name for s in found.streams] == ["anim.apng", "anim.gif", "clip.mp4"]
    assert found.streams[1].duration == pytest.approx(2.0)
    assert decoded_frames(str(gif), fps=2.0) == decoded_frames(str(apng), fps=2.0) == 4
    assert [Path(i.uri).name for i in expand_sources([str(tmp_path)])] == ["anim.apng", "anim.gif", "clip.mp4"]
    assert decoded_frames(str(video)) == 2


def test_a_file_found_in_a_folder_fails_as_the_named_file_would(tmp_path):
    """FFmpeg decodes still WebP but not animated WebP: found by its extension, it fails when read
    with the decoder's error, exactly as when named on its own."""
    anim = write_image(tmp_path / "anim.webp", frames=4)
    (found,) = scan([str(tmp_path)]).streams
    assert found == scan([str(anim)]).streams[0]
    with pytest.raises(DecodeError, match="no frame could be decoded"):
        decoded_frames(found.uri)


def test_skipped_files_are_named_in_one_line(tmp_path):
    make_video(tmp_path / "good.mp4", seconds=1.0, size=(64, 48))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "film.srt").write_text("1\n")
    make_audio_only(tmp_path / "song.wav")
    (tmp_path / ".hidden.mp4").write_bytes(b"")
    (tmp_path / "odd\nname.doc").write_text("x")
    found = scan([str(tmp_path)])
    assert [Path(s.uri).name for s in found.streams] == ["good.mp4"] and not found.failed
    assert found.notes == [f"{tmp_path}: skipped 4 file(s) that are not video or image files by extension: "
                           "notes.txt, odd\\nname.doc, song.wav, film.srt (name a file to index it anyway)"]
    for i in range(SKIPPED_NAMES_SHOWN + 2):
        (tmp_path / f"z{i}.log").write_text("x")
    (note,) = scan([str(tmp_path)]).notes  # the list is cut after SKIPPED_NAMES_SHOWN names
    total = 4 + SKIPPED_NAMES_SHOWN + 2
    assert note == (f"{tmp_path}: skipped {total} file(s) that are not video or image files by extension: "
                    f"notes.txt, odd\\nname.doc, song.wav, film.srt, z0.log and {total - SKIPPED_NAMES_SHOWN} more "
                    "(name a file to index it anyway)")


def test_bad_inputs_fail_alone_with_the_decoders_own_error(tmp_path):
    good = make_video(tmp_path / "good.mp4", seconds=1.0, size=(64, 48)).path
    zero = make_zero_byte(tmp_path / "zero.mp4")
    text = make_text_as_mp4(tmp_path / "text.mp4")
    audio = make_audio_only(tmp_path / "audio.wav")
    missing = tmp_path / "missing.mp4"
    found = scan([str(missing), str(zero), str(good), str(text), str(audio)], ids=["gone", None, None, None, None])
    assert [s.uri for s in found.streams] == [str(good)]
    assert found.streams[0].duration == pytest.approx(1.0, abs=0.05)
    by_uri = {f.uri: f for f in found.failed}
    assert list(by_uri) == [str(missing), str(zero), str(text), str(audio)]
    assert by_uri[str(missing)].stream_id == "gone" and "no such file or directory" in by_uri[str(missing)].error
    for path in (zero, text, audio):  # the same line the decoder would have recorded
        with pytest.raises(SourceError) as err:
            decoded_frames(str(path))
        assert by_uri[str(path)].error == str(err.value) and by_uri[str(path)].stream_id == stream_id_for(str(path))


def test_folders_and_globs_with_nothing_to_index_are_warnings(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    good = make_video(tmp_path / "good.mp4", seconds=1.0, size=(64, 48)).path
    found = scan([str(tmp_path / "empty"), str(tmp_path / "texts"), str(tmp_path / "*.flv"), str(good)])
    assert [s.uri for s in found.streams] == [str(good)] and not found.failed
    assert found.warnings == [f"directory contains no video or image files: {tmp_path / 'empty'}",
                              f"directory contains no video or image files: {tmp_path / 'texts'} (it holds 1 other file(s))",
                              f"glob matches no video or image files: {tmp_path / '*.flv'}"]
    with pytest.raises(SourceError, match="empty"):
        expand_sources([str(tmp_path / "empty")])  # the strict form still raises


def test_broken_symlink_in_a_folder_is_a_failed_input(tmp_path):
    (tmp_path / "link.mp4").symlink_to(tmp_path / "nowhere.mp4")  # a link names its target, as for good files
    found = scan([str(tmp_path)])
    assert [f.uri for f in found.failed] == [str(tmp_path / "nowhere.mp4")] and "no such file" in found.failed[0].error
    assert not found.streams and not found.warnings


def _without_dac_override() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding
    set, so even root obeys file modes (chmod 000 stops nobody else)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_unreadable_file_is_a_failed_input(tmp_path):
    make_video(tmp_path / "good.mp4", seconds=1.0, size=(64, 48))
    locked = make_video(tmp_path / "locked.mp4", seconds=1.0, size=(64, 48)).path
    locked.chmod(0o000)
    code = ("import json, sys; from streamvl.sources import scan; d = scan([sys.argv[1]]); "
            "print(json.dumps([[s.uri for s in d.streams], [[f.uri, f.error] for f in d.failed]]))")
    try:
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True,
                             preexec_fn=_without_dac_override if os.geteuid() == 0 else None)
    finally:
        locked.chmod(0o644)
    streams, failed = json.loads(out.stdout)
    assert streams == [str(tmp_path / "good.mp4")]
    assert [uri for uri, _ in failed] == [str(locked)] and "Permission denied" in failed[0][1]


def test_ids_are_still_checked_for_the_whole_call(tmp_path):
    good = make_video(tmp_path / "good.mp4", seconds=1.0, size=(64, 48)).path
    with pytest.raises(ConfigError):
        scan([str(good)], ids=["a", "b"])
    with pytest.raises(ConfigError):
        scan([str(tmp_path)], ids=["one-id-for-a-folder"])
    found = scan([str(good), str(tmp_path), str(tmp_path / "missing.mp4"), str(tmp_path / "missing.mp4")])
    assert len(found.streams) == 1 and len(found.failed) == 1  # the same file or path is listed once
