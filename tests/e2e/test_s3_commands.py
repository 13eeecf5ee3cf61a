"""The commands of issue 41 that read or write a database, on `--db s3://` (moto's S3 server on
127.0.0.1): rescore and localise (in-process CLI), and `streamvl serve` answering searches over
HTTP from the S3 tables. index, search, streams and upkeep: test_s3_index.py; check and repair:
test_s3_check_repair.py. The index is built without Ray (service_support.index_streams: the real
source and encode stage) to keep the test cheap."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from streamvl.cli import main
from streamvl.plugins.manager import Plugins
from streamvl.storage.store import CLIPS, Store
from streamvl.types import StreamInfo
from tests.e2e.s3_server import SECRET_KEY, moto_s3, s3  # noqa: F401  (fixtures)
from tests.e2e.service_support import Server, index_streams, shapes_video

pytestmark = pytest.mark.e2e


@pytest.fixture
def db(s3, tmp_path) -> str:
    uri = s3.uri("cmds/db")
    index_streams(uri, [StreamInfo("a", str(shapes_video(tmp_path / "a.mp4", seed=3, seconds=8.0, size=96)))])
    return uri


def prompt_checkpoint(db: str, tmp_path) -> str:
    from streamvl.models.loading import load_model

    torch.manual_seed(0)
    model = load_model(Store(db).read(CLIPS, columns=["model"])["model"][0].as_py())
    adapter = Plugins().adapter("prompt").build(model, {})
    return str(adapter.save(tmp_path / "prompt.safetensors", {"classes": ["circle", "square"]}))  # as `train` saves


def test_rescore_and_localise_on_s3(db, tmp_path, one_torch_thread):
    ckpt = prompt_checkpoint(db, tmp_path)
    runner = CliRunner()
    out = runner.invoke(main, ["rescore", "--db", db, "--adapter", "prompt", "--checkpoint", ckpt])
    assert out.exit_code == 0, out.output
    store = Store(db)
    assert len(store.clip_windows("prompt")) == len(store.clip_windows("meanpool")) > 0
    out = runner.invoke(main, ["localise", "--db", db, "--adapter", "prompt", "--checkpoint", ckpt])
    assert out.exit_code == 0, out.output
    written = int(out.output.split("segments")[0].split()[-1])
    assert out.output.strip().endswith("a") and written == Store(db).count("segments") > 0
    assert SECRET_KEY not in out.output


def test_serve_searches_s3_tables_over_http(s3, db, tmp_path):
    server = Server(db, env=s3.env, log=tmp_path / "serve.log").start(timeout_s=600)  # a loaded machine: slow warm-up
    try:
        with server.client() as http:
            r = http.get("/api/v1/search", params={"q": "a red circle", "k": 3})
            assert r.status_code == 200, r.text
            hits = r.json()["hits"]
            assert hits and {h["stream_id"] for h in hits} == {"a"}
            assert http.get("/api/v1/streams").status_code == 200
    finally:
        assert server.stop() == 0
    assert SECRET_KEY not in "".join(server.output)
