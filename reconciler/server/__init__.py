"""HTTP: one `create_app` (in `app`) composes the device routes, the operator routes, long
polls, metrics, the webhook and auth over a narrow `Backend` interface."""
