"""One file per schema revision, oldest first (a package so wheels ship them)."""
