"""Train and evaluate adapters on labelled clips (a user feature)."""
