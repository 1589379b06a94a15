"""Tools around the depth node: ``play`` (replay a bag), ``record`` (write the node's outputs) and
``pipeline`` (serve a model on a bag end to end)."""
