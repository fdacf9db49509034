"""Pure functions of the data pipelines, and the thin Beam DoFns and PTransforms around them."""

from runners import worker_exit

worker_exit.install()  # acts only inside a local Beam SDK worker process (see worker_exit.py)
