"""Stage kinds: one module each, config and declaration light, the work imported inside run()."""
