"""Small shared helpers: atomic file IO, image reading, logging."""
