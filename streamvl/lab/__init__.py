"""The shapes world, pretraining, zero-shot evaluation and probes: research tools, imported only when used."""
