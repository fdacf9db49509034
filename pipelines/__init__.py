"""Pipeline options and wiring, and the `cattag` command line. Nothing imports this package."""
