"""One run's pieces on the stock Trainer: backbone, PEFT, evaluation, clipping, device, provenance."""
