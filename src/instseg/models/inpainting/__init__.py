"""instseg.models.inpainting"""
