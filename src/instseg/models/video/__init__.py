"""instseg.models.video: PCAN (survey ch. 5) on top of the image InstanceSegmenter.

- ``prototypes``: GMM-EM prototypes (Eqs. 5.2-5.4)
- ``cross_attention``: frame-level PCAM, ``PrototypeMemory``, non-local / self-attention baselines
- ``instance_prototypes``: fg/bg instance prototypes, momentum update (Eq. 5.8), TSM
- ``tracker``: QDTrack association head, quasi-dense loss, ``Tracker`` / ``TrackState``
- ``pcan``: ``PCAN`` (``loss(ClipBatch)``, ``predict_frame(Batch, VideoState)``)
"""
