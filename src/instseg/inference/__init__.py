"""instseg.inference"""
