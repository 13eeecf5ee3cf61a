"""The HTTP service of `streamvl serve`: a search API under /api/v1 and the page at /.

Layout (FastAPI's "bigger applications" pattern): `app.create_app` builds the app from
`ServiceSettings`; one router per resource in `routers/` (search, streams, media, health,
session); `schemas` holds the pydantic models that are the API's contract; `deps` the shared
state and auth dependencies; `paging` the ordered, cursor-paged search; `media` the video files
and cuts; `client` what `streamvl search --server URL` calls. The page's assets are in static/.
"""
