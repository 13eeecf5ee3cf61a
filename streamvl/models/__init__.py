"""open_clip loading (`ARCH@TAG`, `ARCH@/path`, shipped default), precision paths, compact weights."""
