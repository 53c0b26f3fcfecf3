"""``python -m bench.gateway``: the gateway against a bare model server, MLServer and Ray Serve, one run."""
