"""Cost and runaway-agent control: shared counters, windows, prices and trusted identity."""
