"""Research suite: one command per falsifiable claim of the looped architecture (`mythos-research --help`)."""
