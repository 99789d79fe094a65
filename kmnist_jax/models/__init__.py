"""The Flax NNX networks, built by name (`factory.create_model`)."""
