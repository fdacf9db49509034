"""Kept minimal so Beam's --setup_file can stage cattag onto Flink or Dataflow workers; the
metadata lives in pyproject.toml."""

from setuptools import setup

setup()
