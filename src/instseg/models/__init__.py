"""instseg.models"""
