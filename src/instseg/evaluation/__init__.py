"""instseg.evaluation"""
