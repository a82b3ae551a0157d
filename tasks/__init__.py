"""Experiment harness: task families on the stock HF Trainer (see run.py). Light to import: heavy
libraries load inside the modules that need them."""
