"""One APIRouter per resource: search, streams, media, health, session."""
