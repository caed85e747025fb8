"""`hedgerow demo`: the example repository run for real on this machine, with the daemons it
needs (dockerd, a registry) started and stopped by pid. Talks to the engine over its HTTP API,
without the docker SDK, which only the agent's engine adapter imports."""
