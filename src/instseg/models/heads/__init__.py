"""instseg.models.heads"""
