"""Surviving a cluster: run locks, checkpoints, signals and requeue, DDP, shared runs, status, Ray."""
