"""Data: formats (one file each), synthetic generators, transforms, loaders."""
