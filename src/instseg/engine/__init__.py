"""instseg.engine"""
