"""instseg.models.detectors"""
