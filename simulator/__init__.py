"""A software infusion pump: physics on an injected clock, fault injection, real wire protocols."""
