"""``python -m bench.gateway``: the gateway against a bare model server, MLServer and Ray Serve, one run."""

STICKY_HEADER = "x-user-id"  # the rollout's sticky key; here so that the load generators import nothing heavy
