import pytest

from streamvl.config import IndexConfig, load_config
from streamvl.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('db = "/tmp/x"\n[sampling]\nfps = 2.0\n[clips]\nwindow = 6\nstride = 3\n')
    cfg = load_config(path, {"sampling.fps": 0.5, "model": None, "adapters": ["meanpool", "other"]})
    assert cfg.db == "/tmp/x" and cfg.sampling.fps == 0.5  # CLI overrides the file; None is ignored
    assert cfg.clips.window == 6 and cfg.adapters == ["meanpool", "other"]
    assert IndexConfig.model_validate_json(cfg.model_dump_json()) == cfg  # serialisable


@pytest.mark.parametrize(
    "overrides, needle",
    [({"sampling.fps": 0}, "fps"), ({"clips.stride": 9}, "stride"), ({"bogus": 1}, "bogus"), ({"adapters": []}, "adapters")],
)
def test_invalid_values_are_typed_errors(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("fps = = 1")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad)
