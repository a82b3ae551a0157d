"""Speed and memory benchmarks (``make bench``): CapaBoost vs stock PEFT and the official d-copies scheme."""
