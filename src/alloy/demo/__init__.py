"""`alloy demo`: two specialists trained on a laptop CPU, merged into one model that keeps both skills."""
