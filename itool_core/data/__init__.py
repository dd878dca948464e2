"""Data: loaders per source format into the one example schema, difficulty features, splits, buffers."""
