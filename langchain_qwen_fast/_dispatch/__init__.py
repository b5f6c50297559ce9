"""The dispatcher: admission, fair queueing between callers, lists, wait-to-fill.

``dispatcher`` runs the pump; ``item`` is one input on its way; ``feed`` is one caller's batch fed in
as it is prepared; ``scheduler`` keeps one queue per caller and says whose turn it is.
"""
