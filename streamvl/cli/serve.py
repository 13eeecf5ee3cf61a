"""`streamvl serve`: the search service and its page (streamvl.service) on one port."""

from __future__ import annotations

import click

from streamvl.cli.common import db_option


@click.command(name="serve")
@db_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind; any but loopback needs an API key")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: any free port")
@click.option("--index", is_flag=True, help="also run the serve-index job on --db (streams added through the API get indexed)")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="TOML config for --index")
@click.option("--api-key-file", type=click.Path(dir_okay=False), help="file whose first line is the API key "
              "(else $STREAMVL_API_KEY)")
@click.option("--cors-origin", "cors_origins", multiple=True, help="allow this origin to call the API from a browser (repeatable)")
@click.option("--media-root", "media_roots", multiple=True, type=click.Path(file_okay=False),
              help="folder whose files POST /api/v1/streams may add (repeatable; default: URLs only)")
@click.option("--record", "record_dir", type=click.Path(file_okay=False),
              help="record live streams into this folder (stream copy) so their hits play")
@click.option("--record-segment-s", default=10.0, show_default=True, type=click.FloatRange(1, 600),
              help="recording segment length in seconds (each ends at the next keyframe)")
@click.option("--record-keep-hours", default=24.0, show_default=True, type=click.FloatRange(min=0),
              help="delete recorded segments older than this; 0: keep (until --record-max-gb)")
@click.option("--record-max-gb", type=click.FloatRange(min=0, min_open=True),
              help="delete the oldest recorded segments while the folder holds more than this")
def serve(db, host, port, index, config_path, api_key_file, cors_origins, media_roots, record_dir, record_segment_s,
          record_keep_hours, record_max_gb) -> None:
    """Serve search over HTTP (API under /api/v1, docs at /docs) and the search page at /.

    Keeps the model and recent query embeddings warm; stops cleanly on SIGINT/SIGTERM."""
    from streamvl.service.server import run
    from streamvl.service.settings import ServiceSettings, read_api_key

    key = read_api_key(api_key_file)
    settings = ServiceSettings(
        db=db, host=host, port=port, api_key=key, cors_origins=tuple(cors_origins), index=index,
        index_args=("--config", config_path) if config_path else (), media_roots=tuple(media_roots),
        record_dir=record_dir, record_segment_s=record_segment_s,
        record_keep_s=record_keep_hours * 3600 if record_keep_hours else None,
        record_max_bytes=int(record_max_gb * 2**30) if record_max_gb else None)

    def ready(url: str) -> None:
        lock = "an API key is required" if key else "no API key: open to this machine only"
        click.echo(f"streamvl serving {db} on {url}  ({lock}; API docs at {url}/docs)", err=True)

    run(settings, on_ready=ready)
