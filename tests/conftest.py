"""Shared fixtures: a small synthetic video corpus (built once per session) and the real clips."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.videos import (  # pyproject sets pytest's pythonpath to the repo root
    VideoSpec,
    make_audio_only,
    make_corrupt,
    make_text_as_mp4,
    make_truncated,
    make_video,
    make_zero_byte,
)

_REPO = Path(__file__).resolve().parents[1]

SHARED_VIDEOS = _REPO.parent / "shared" / "data" / "videos"
_SESSION = pytest.StashKey["pytest.Session"]()


_FOLDER_MARKERS = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e, "lab": pytest.mark.lab}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests carry the marker of their folder (tests/integration, tests/e2e, tests/lab), so a folder runs
    apart (-m lab) or not at all (-m 'not lab')."""
    for item in items:
        parts = Path(str(item.path)).relative_to(_REPO / "tests").parts
        if len(parts) > 1 and parts[0] in _FOLDER_MARKERS:
            item.add_marker(_FOLDER_MARKERS[parts[0]])


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[_SESSION] = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process with pytest's exit status, skipping the interpreter's teardown.

    Once (1 of ~17 CI runs) the process died with SIGSEGV after every test had passed and the
    summary was printed: in interpreter shutdown, where the native threads of torch, LanceDB,
    Arrow and Ray are torn down in no fixed order. Ray is shut down explicitly first, output
    is flushed, and the exit status stays pytest's. STREAMVL_TEST_CLEAN_EXIT=1 keeps the normal
    teardown (to investigate such a crash, with PYTHONFAULTHANDLER=1).
    """
    session = config.stash.get(_SESSION, None)
    if session is None or os.environ.get("STREAMVL_TEST_CLEAN_EXIT") == "1":
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(session.exitstatus))


@dataclass(frozen=True)
class Corpus:
    """Good videos live in good/ (with a nested subdir), broken ones in bad/."""

    root: Path
    good: Path
    bad: Path
    h264_mp4: VideoSpec  # 640x360, 25 fps, 4 s
    mpeg4_avi: VideoSpec  # 320x240, 25 fps, 4 s
    vp9_webm: VideoSpec  # 320x240, 25 fps, 3 s
    mjpeg_mkv: VideoSpec  # 320x240, 25 fps, 3 s (in good/nested/)
    vfr_mp4: VideoSpec  # h264, irregular pts with a 2.3 s gap, ~8 s
    truncated: VideoSpec  # h264 mp4, moov first, cut to half its bytes
    corrupt: VideoSpec  # h264 mp4, random bytes mid-file
    zero_byte: Path
    text_mp4: Path
    audio_only: Path  # wav: a valid container without video

    @property
    def good_videos(self) -> list[VideoSpec]:
        return [self.h264_mp4, self.mpeg4_avi, self.vp9_webm, self.mjpeg_mkv, self.vfr_mp4]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("videos")
    good, bad = root / "good", root / "bad"
    (good / "nested").mkdir(parents=True)
    bad.mkdir()
    (good / "notes.txt").write_text("not a video")
    return Corpus(
        root=root,
        good=good,
        bad=bad,
        h264_mp4=make_video(good / "h264.mp4", size=(640, 360), fps=25, seconds=4.0),
        mpeg4_avi=make_video(good / "mpeg4.avi", codec="mpeg4", size=(320, 240), seconds=4.0),
        vp9_webm=make_video(good / "vp9.webm", codec="libvpx-vp9", size=(320, 240), seconds=3.0),
        mjpeg_mkv=make_video(good / "nested" / "mjpeg.mkv", codec="mjpeg", size=(320, 240), seconds=3.0),
        vfr_mp4=make_video(good / "vfr.mp4", size=(160, 120), fps=25, seconds=8.0, vfr=True),
        truncated=make_truncated(bad / "truncated.mp4"),
        corrupt=make_corrupt(bad / "corrupt.mp4"),
        zero_byte=make_zero_byte(bad / "zero.mp4"),
        text_mp4=make_text_as_mp4(bad / "text.mp4"),
        audio_only=make_audio_only(bad / "audio.wav"),
    )


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    """The real clips in <repo>/../shared/data/videos; skips when that folder is absent."""
    if not SHARED_VIDEOS.is_dir() or not any(SHARED_VIDEOS.iterdir()):
        pytest.skip(f"real clips not found at {SHARED_VIDEOS} (shared data not mounted)")
    return SHARED_VIDEOS


# Adapters that wrap the vision tower are tested on both open_clip tower kinds.
TOWERS = {"vit": "streamvl-tiny@random:0", "resnet": "streamvl-shapes@random:0"}  # VisionTransformer, ModifiedResNet


@pytest.fixture(scope="module", params=sorted(TOWERS))
def tower_model(request):
    """A seeded random model of each tower kind (the ResNet made lively, see lively_resnet)."""
    from streamvl.models.loading import load_model

    return load_model(TOWERS[request.param]) if request.param == "vit" else lively_resnet()


def patches(model) -> int:
    """Patch (ViT) or final spatial (ResNet) positions at 64 x 64."""
    return 64 if type(model.model.visual).__name__ == "VisionTransformer" else 4


@pytest.fixture(scope="session")
def plugins():
    """Every installed plugin (entry points included), as the CLI would load them."""
    from streamvl.plugins.manager import Plugins

    return Plugins()


@pytest.fixture(scope="module")
def ray_local():
    """A private local Ray instance per test module (never a `ray start` cluster that may be running)."""
    import ray
    from ray._private import ray_constants

    from streamvl.runtime.cluster import ONE_MACHINE_ENV, keep_on_loopback

    before = os.environ.get(ONE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    keep_on_loopback()  # 127.0.0.1 only; undone after, for the netns tests' multi-node Ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()
    if before[0] is None:
        os.environ.pop(ONE_MACHINE_ENV, None)
    else:
        os.environ[ONE_MACHINE_ENV] = before[0]
    ray_constants.ENABLE_RAY_CLUSTER = before[1]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Adapter tests run many tiny ops: one thread avoids spin-waiting when the machine is busy."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shapes_mp4(tmp_path_factory) -> Path:
    """A 4 s shapes-world clip (a shape moving left, 64x64, 8 fps) written as an h264 mp4."""
    from streamvl.lab.synthetic import RenderConfig, sample_clip, write_clip

    path = tmp_path_factory.mktemp("shapes") / "move_left.mp4"
    return write_clip(sample_clip(3, "move_left", render=RenderConfig(64, 64, 8.0, 32)), path)


def index_file(path: Path, db: str, config, plugins=None):
    """Decode a file with the real source and run the EncodeStage over it (no Ray): the index at db."""
    from streamvl.pipeline.encode import EncodeStage
    from streamvl.sources import open_source
    from streamvl.storage.store import CLIPS, FRAMES, Store
    from streamvl.types import Status, StreamInfo, StreamState

    stage = EncodeStage(config, plugins)
    store = Store(db)
    info = StreamInfo("clip-1", str(path))
    with open_source(info, config.sampling.model_copy(update={"size": stage.model.image_size})) as source:
        for batch in source:
            frames, clips, _ = stage.process([batch])
            store.upsert(FRAMES, frames)
            store.upsert(CLIPS, clips)
    store.record_state(StreamState(info.stream_id, info.uri, Status.DONE, model=stage.model.name))
    return stage


def lively_resnet():
    """A seeded random open_clip ModifiedResNet with healthy activations, for mechanics tests.

    A freshly built ModifiedResNet (zero-initialised last BatchNorm scale per bottleneck, BatchNorm
    statistics never fitted) maps every image to nearly the same feature: useless for testing what
    adapters wrapped around a *pretrained* tower do. Here convolutions get Kaiming init, every
    BatchNorm scale 1, and BatchNorm statistics are fitted on one batch of random images.
    """
    import copy
    import dataclasses

    import numpy as np
    import torch

    from streamvl.models.loading import load_model

    base = load_model("streamvl-shapes@random:0")
    module = copy.deepcopy(base.model)
    visual = module.visual
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(0)
        for m in visual.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batch
        raw = np.random.default_rng(0).integers(0, 255, (32, 64, 64, 3), dtype=np.uint8)
        visual.train()
        visual(base.preprocess(raw))
        visual.eval()
    module.requires_grad_(False)
    return dataclasses.replace(base, model=module, weights_sha256="lively-resnet-0")
