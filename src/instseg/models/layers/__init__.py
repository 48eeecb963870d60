"""instseg.models.layers"""
