"""What a run is: the typed schema, validation into a RunSpec, experiment identity, sweep expansion."""
