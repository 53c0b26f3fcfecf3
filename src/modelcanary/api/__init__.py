"""The control API: rollouts, judgements, history and audit over HTTP, with token auth and roles."""
