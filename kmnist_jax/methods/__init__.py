"""The methods (see `registry`) and the harness that runs them."""
