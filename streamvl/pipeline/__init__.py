"""Plain-Python stages: frames -> encoder -> adapter hooks -> rows; windows; no Ray."""
