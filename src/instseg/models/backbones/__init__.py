"""instseg.models.backbones"""
