"""`hedgerow import compose`: a docker-compose file turned into Hedgerow manifests. Pure rules
(`interpolate`, `convert`) with the reading and writing at the command's edge."""
