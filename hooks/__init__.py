"""Git hooks given to workers and the lifecycle hook runner (installed as gitswarm.hooks)."""
