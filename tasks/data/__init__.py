"""Every data source (hub, local copy, original downloads, fixtures) as one DatasetDict shape, checked."""
