"""Pure functions of the data pipelines, and the thin Beam DoFns and PTransforms around them."""
