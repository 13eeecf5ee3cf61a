"""The plugin contract (hook specs, the adapter Protocol), the manager, and the built-in meanpool."""
