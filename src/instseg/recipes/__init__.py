"""Recipes: glue that builds model, data and trainer from a config, one file per task."""
