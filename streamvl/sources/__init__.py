"""Sources: open a URI, sample frames by presentation time, resize in FFmpeg. No Ray, no torch.

    infos = expand_sources(["videos/", "rtsp://cam/1"])
    with open_source(infos[0], SamplingConfig(fps=1, size=224)) as source:
        for batch in source: ...   # FrameBatch, last one final=True
"""

from streamvl.sources.discover import (MEDIA_EXTENSIONS, VIDEO_EXTENSIONS, Discovery, FailedInput, expand_sources, scan,
                                       stream_id_for)
from streamvl.sources.live import LiveResume, LiveSource, open_stream
from streamvl.sources.source import Source, open_source

__all__ = ["MEDIA_EXTENSIONS", "VIDEO_EXTENSIONS", "Discovery", "FailedInput", "LiveResume", "LiveSource", "Source",
           "expand_sources", "open_source", "open_stream", "scan", "stream_id_for"]
