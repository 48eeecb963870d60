"""instseg.models.video"""
