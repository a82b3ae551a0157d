"""What each task suite is: names, columns, label spaces, metrics, selection rules, protocols, sizes."""
