"""The web dashboard: read-only pages over the operator API's data (`model`, pure), a cache of
the fleet's rows (`fleet`), sessions (`sessions`) and the pages themselves (`pages`)."""
